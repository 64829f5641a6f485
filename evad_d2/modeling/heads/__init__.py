"""EVAD's heads: query-based actor localization and action classification (paper 3.3)."""
from .action import (
    ACTION_HEAD_REGISTRY,
    ACTION_HEAD_SHORT_NAMES,
    ContextRefinementHead,
    LinearActionHead,
    build_action_head,
    build_actor_pooler,
)
from .localization import LOCALIZATION_HEAD_REGISTRY, LocalizationHead, build_localization_head

__all__ = [
    "ACTION_HEAD_REGISTRY",
    "ACTION_HEAD_SHORT_NAMES",
    "ContextRefinementHead",
    "LOCALIZATION_HEAD_REGISTRY",
    "LinearActionHead",
    "LocalizationHead",
    "build_action_head",
    "build_actor_pooler",
    "build_localization_head",
]
