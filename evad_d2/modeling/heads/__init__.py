"""EVAD's heads: query-based actor localization and action classification (paper 3.3)."""
from .action import ContextRefinementHead, LinearActionHead, build_action_head
from .localization import LocalizationHead
from .roi_3d import extend_boxes, roi_align_3d

__all__ = [
    "ContextRefinementHead",
    "LinearActionHead",
    "LocalizationHead",
    "build_action_head",
    "extend_boxes",
    "roi_align_3d",
]
