"""Every shipped config loads, builds its model (on the meta device) and is consistent."""
import glob
import os

import pytest
import torch
from detectron2.modeling import build_model

from evad_d2 import get_evad_cfg
from evad_d2.modeling.backbone import ViTSimpleFPN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True) if not os.path.basename(p).startswith("Base-")
)


def test_every_paper_setting_has_a_config():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs")) for p in CONFIGS}
    for size in (224, 256, 288):
        for r in ("1.0", "0.9", "0.8", "0.7", "0.6"):
            assert f"AVA/v2.2/EVAD_ViT-B_K400_rho{r}_{size}.yaml" in names
    for wkf in (1, 2, 4, 6, 8):
        assert f"AVA/ablations/EVAD_ViT-B_rho0.6_wkf{wkf}_224.yaml" in names
    for extra in (
        "AVA/v2.2/EVAD_ViT-B_K710+K400_rho0.7_288.yaml",
        "AVA/v2.2/EVAD_ViT-L_K700_rho0.7_288.yaml",
        "AVA/v2.1/EVAD_ViT-L_K700_rho0.7_288.yaml",
        "AVA/ablations/EVAD_ViT-B_linear-head_rho1.0_224.yaml",
        "UCF101-24/EVAD_ViT-B_K400_rho0.6.yaml",
        "JHMDB/EVAD_ViT-B_K400_rho1.0_split3.yaml",
    ):
        assert extra in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_builds_a_consistent_model(path):
    cfg = get_evad_cfg(path)
    e = cfg.MODEL.EVAD
    assert cfg.MODEL.META_ARCHITECTURE == "EVAD"
    assert len(e.KEEP_RATES) == e.DEPTH
    assert all(0 <= i < e.DEPTH for i in e.FEATURE_LAYERS) and len(e.FEATURE_LAYERS) == len(e.FEATURE_SCALES)
    assert e.EMBED_DIM % e.NUM_HEADS == 0 and e.DECODER.DIM % e.DECODER.NUM_HEADS == 0
    assert cfg.INPUT.NUM_FRAMES % e.TUBELET_SIZE == 0
    with torch.device("meta"):  # full-size models, no memory
        model = build_model(_on_meta(cfg))
    assert isinstance(model.backbone, ViTSimpleFPN)
    assert model.action_head.num_classes == e.NUM_ACTION_CLASSES
    pruned = [i for i, r in enumerate(e.KEEP_RATES) if r < 1]
    if "ViT-B" in path:  # appendix B: 4th, 7th, 10th layers (12 blocks; ViT-L: 7th, 13th, 19th of 24)
        assert e.DEPTH == 12 and pruned in ([], [3, 6, 9]) and list(e.FEATURE_LAYERS) == [2, 5, 8, 11]
        assert (e.DECODER.DIM, e.DECODER.DEPTH) == (384, 6)
    if "ViT-L" in path:
        assert e.DEPTH == 24 and pruned == [6, 12, 18] and (e.DECODER.DIM, e.DECODER.DEPTH) == (512, 12)
    n = sum(p.numel() for p in model.parameters())
    if "ViT-B" in path and "linear" not in path:
        # The official ViT-B EVAD (185,359,636 with 80 classes); six classifiers end in Linear(2048, C).
        assert n == 185_359_636 + 6 * 2049 * (e.NUM_ACTION_CLASSES - 80)
    if "linear-head" in path:
        assert abs(n - 169e6) / 169e6 < 0.03  # paper Table 1a


def _on_meta(cfg):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "meta"
    return cfg
