from .backbone import PruningVideoViT, ViTSimpleFPN, restore_token_map

__all__ = ["PruningVideoViT", "ViTSimpleFPN", "restore_token_map"]
