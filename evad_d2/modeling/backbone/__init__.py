from .contract import BackboneOutput, EVADBackbone, check_backbone
from .pruning import num_kept_tokens, restore_token_map, select_tokens
from .simple_fpn import ViTSimpleFPN
from .vit import PruningVideoViT, scaled_keep_rates

__all__ = [
    "BackboneOutput",
    "EVADBackbone",
    "PruningVideoViT",
    "ViTSimpleFPN",
    "check_backbone",
    "num_kept_tokens",
    "restore_token_map",
    "scaled_keep_rates",
    "select_tokens",
]
