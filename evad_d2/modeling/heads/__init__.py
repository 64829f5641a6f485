"""EVAD's heads: query-based actor localization and action classification (paper 3.3)."""
from .action import (
    ACTION_HEAD_REGISTRY,
    ACTION_HEAD_SHORT_NAMES,
    ContextRefinementHead,
    LinearActionHead,
    actor_pooler_from_config,
    build_action_head,
)
from .localization import LOCALIZATION_HEAD_REGISTRY, LocalizationHead, build_localization_head

__all__ = [
    "ACTION_HEAD_REGISTRY",
    "ACTION_HEAD_SHORT_NAMES",
    "ContextRefinementHead",
    "LOCALIZATION_HEAD_REGISTRY",
    "LinearActionHead",
    "LocalizationHead",
    "actor_pooler_from_config",
    "build_action_head",
    "build_localization_head",
]
