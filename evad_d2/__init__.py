"""evad-d2: EVAD (efficient video action detection) for detectron2.

Importing the package registers its backbones, meta-architecture, datasets and evaluators with
detectron2's registries and catalogs.
"""
from .config import add_evad_config, get_evad_cfg
from . import modeling  # noqa: F401  (registers backbones and the meta-architecture)
from . import data  # noqa: F401  (registers datasets)
from . import evaluation  # noqa: F401

__all__ = ["add_evad_config", "get_evad_cfg"]
__version__ = "0.1.0"
