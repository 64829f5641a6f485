from .pruning import num_kept_tokens, restore_token_map, select_tokens
from .simple_fpn import ViTSimpleFPN
from .vit import PruningVideoViT, scaled_keep_rates

__all__ = ["PruningVideoViT", "ViTSimpleFPN", "num_kept_tokens", "restore_token_map", "select_tokens", "scaled_keep_rates"]
