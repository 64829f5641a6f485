"""``torch.compile`` of an EVAD model for inference (``TEST.COMPILE``, ``--compile``).

The tensor parts of the network (the backbone with its token pruning, the localization head,
the action head) are compiled in place with ``nn.Module.compile``: module types, attribute access
(``model.backbone.keep_rates``, ...) and state-dict keys stay as they are, so checkpoints load and
save as before. Pre- and post-processing (normalising, padding, ``Instances``, the data-dependent
person threshold) stay eager. Shapes are static (``dynamic=False``): the first call at a new clip
size or keep rate compiles again (TorchInductor, minutes on a CPU for a ViT-B; its on-disk cache
makes later processes faster), and at most ``torch._dynamo.config.cache_size_limit`` variants are
kept before PyTorch falls back to eager for the rest.
"""
from typing import Sequence

from torch import nn

__all__ = ["COMPILED_PARTS", "compile_model", "is_compiled"]

# The EVAD submodules that are compiled.
COMPILED_PARTS = ("backbone", "localization_head", "action_head")


def compile_model(model: nn.Module, parts: Sequence[str] = COMPILED_PARTS, **compile_kwargs) -> nn.Module:
    """Compile ``model``'s ``parts`` in place with ``torch.compile`` (static shapes by default).

    Args:
        model: an EVAD model.
        parts: names of its submodules to compile.
        compile_kwargs: passed to ``torch.compile`` (e.g. ``mode="max-autotune"``); ``dynamic``
            defaults to False.

    Returns:
        ``model`` itself.
    """
    compile_kwargs.setdefault("dynamic", False)
    for name in parts:
        part = getattr(model, name, None)
        if not isinstance(part, nn.Module):
            raise ValueError(f"compile_model: {type(model).__name__} has no submodule {name!r} to compile")
        part.compile(**compile_kwargs)
    return model


def is_compiled(model: nn.Module) -> bool:
    """Whether :func:`compile_model` (or ``nn.Module.compile``) compiled a submodule of ``model``."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())
