from .backbone import PruningVideoViT, ViTSimpleFPN, restore_token_map
from .meta_arch import EVAD

__all__ = ["EVAD", "PruningVideoViT", "ViTSimpleFPN", "restore_token_map"]
