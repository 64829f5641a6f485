"""Register the standard datasets by name. Nothing is read here; see datasets/README.md.

Roots are under ``$EVAD_DATASETS`` (default ``datasets``, relative to the working directory):

    ava_v2.1_{train,val}, ava_v2.2_{train,val}   $EVAD_DATASETS/ava
    ava_like_{train,val}                         $EVAD_DATASETS/generated/ava_like (generate_ava_like.py)
    ucf101_24_{train,test}                       $EVAD_DATASETS/ucf24 (UCF101v2-GT.pkl, rgb-images/)
    jhmdb_{train,test}_split{1,2,3}              $EVAD_DATASETS/jhmdb (JHMDB-GT.pkl, rgb-images/, .png)

AVA-format datasets read videos/ when present, else frames/ (``frame_source="auto"``); register
again under another name with ``register_ava`` to force one.
"""
import os

from .ava import register_ava
from .ucf_jhmdb import register_ucf_jhmdb

__all__ = ["register_all", "datasets_root"]


def datasets_root() -> str:
    return os.environ.get("EVAD_DATASETS", "datasets")


def register_all(root: str):
    for version in ("2.1", "2.2"):
        for split in ("train", "val"):
            register_ava(f"ava_v{version}_{split}", os.path.join(root, "ava"), split, version, "auto")
    for split in ("train", "val"):
        register_ava(f"ava_like_{split}", os.path.join(root, "generated", "ava_like"), split, "2.2", "auto")
    ucf = os.path.join(root, "ucf24")
    for split in ("train", "test"):
        register_ucf_jhmdb(
            f"ucf101_24_{split}", os.path.join(ucf, "UCF101v2-GT.pkl"), os.path.join(ucf, "rgb-images"), split, 0
        )
    jhmdb = os.path.join(root, "jhmdb")
    for k in range(3):
        for split in ("train", "test"):
            register_ucf_jhmdb(
                f"jhmdb_{split}_split{k + 1}", os.path.join(jhmdb, "JHMDB-GT.pkl"), os.path.join(jhmdb, "rgb-images"),
                split, k, frame_ext=".png",
            )
