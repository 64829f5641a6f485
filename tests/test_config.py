"""Every shipped config loads, builds its model (on the meta device) and is consistent."""
import glob
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from evad_d2 import add_evad_config, get_evad_cfg
from evad_d2.config import ConfigValueError, check_evad_cfg
from evad_d2.config_check import check_batch_split
from evad_d2.modeling.backbone import ViTSimpleFPN
from evad_d2.testing import REPO_ROOT as ROOT, TINY_CONFIG as TINY

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


E = "MODEL.EVAD"
# (overrides on the tiny config, the message part that names key, value and allowed range).
BAD_VALUES = [
    # input
    (["INPUT.SAMPLING_RATE", "0"], "INPUT.SAMPLING_RATE = 0 is not allowed: it must be an integer >= 1"),
    (["INPUT.SAMPLING_RATE", "-2"], "INPUT.SAMPLING_RATE = -2 is not allowed: it must be an integer >= 1"),
    (["INPUT.NUM_FRAMES", "7"], "INPUT.NUM_FRAMES = 7 is not allowed: it must be a multiple of MODEL.EVAD.TUBELET_SIZE = 2"),
    (["INPUT.NUM_FRAMES", "0"], "INPUT.NUM_FRAMES = 0 is not allowed: it must be an integer >= 1"),
    (["INPUT.KEYFRAME_INDEX", "8"], "INPUT.KEYFRAME_INDEX = 8 is not allowed: it must be -1 (the middle frame) or an integer in [0, INPUT.NUM_FRAMES - 1 = 7]"),
    (["INPUT.KEYFRAME_INDEX", "-2"], "INPUT.KEYFRAME_INDEX = -2 is not allowed"),
    (["INPUT.MIN_SIZE_TRAIN", "(64, 0)"], "INPUT.MIN_SIZE_TRAIN[1] = 0 is not allowed: it must be an integer >= 1"),
    (["INPUT.MIN_SIZE_TRAIN", "()"], "INPUT.MIN_SIZE_TRAIN = () is not allowed: it must be a list of at least 1 values"),
    (["INPUT.MIN_SIZE_TRAIN_SAMPLING", "range"], "INPUT.MIN_SIZE_TRAIN = (64,) is not allowed: it must be a list of exactly 2 values"),
    (["INPUT.MIN_SIZE_TRAIN_SAMPLING", "any"], "INPUT.MIN_SIZE_TRAIN_SAMPLING = 'any' is not allowed: it must be one of ['choice', 'range']"),
    (["INPUT.MAX_SIZE_TRAIN", "0"], "INPUT.MAX_SIZE_TRAIN = 0 is not allowed: it must be an integer >= 1"),
    (["INPUT.MIN_SIZE_TEST", "0"], "INPUT.MIN_SIZE_TEST = 0 is not allowed: it must be an integer >= 1"),
    (["INPUT.MAX_SIZE_TEST", "-1"], "INPUT.MAX_SIZE_TEST = -1 is not allowed: it must be an integer >= 1"),
    (["INPUT.COLOR_JITTER", "1.5"], "INPUT.COLOR_JITTER = 1.5 is not allowed: it must be a number in [0, 1]"),
    (["INPUT.COLOR_JITTER", "-0.1"], "INPUT.COLOR_JITTER = -0.1 is not allowed: it must be a number in [0, 1]"),
    (["INPUT.FORMAT", "YUV"], "INPUT.FORMAT = 'YUV' is not allowed: it must be one of ['RGB', 'BGR']"),
    (["INPUT.RANDOM_FLIP", "both"], "INPUT.RANDOM_FLIP = 'both' is not allowed: it must be one of ['none', 'horizontal', 'vertical']"),
    (["MODEL.PIXEL_MEAN", "[1.0, 2.0]"], "MODEL.PIXEL_MEAN = [1.0, 2.0] is not allowed: it must be a list of exactly 3 values"),
    (["MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]"], "MODEL.PIXEL_STD[1] = 0.0 is not allowed: it must be a number > 0"),
    # backbone
    (["MODEL.EVAD.TUBELET_SIZE", "0"], f"{E}.TUBELET_SIZE = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.EMBED_DIM", "0"], f"{E}.EMBED_DIM = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.EMBED_DIM", "50"], f"{E}.EMBED_DIM = 50 is not allowed: it must be a multiple of {E}.NUM_HEADS = 4"),
    (["MODEL.EVAD.DEPTH", "0"], f"{E}.DEPTH = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.NUM_HEADS", "0"], f"{E}.NUM_HEADS = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.MLP_RATIO", "0.0"], f"{E}.MLP_RATIO = 0.0 is not allowed: it must be a number > 0"),
    (["MODEL.EVAD.PATCH_SIZE", "0"], f"{E}.PATCH_SIZE = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.DROP_PATH_RATE", "1.0"], f"{E}.DROP_PATH_RATE = 1.0 is not allowed: it must be a number in [0, 1)"),
    (["MODEL.EVAD.PRETRAIN_IMG_SIZE", "8"], f"{E}.PRETRAIN_IMG_SIZE = 8 is not allowed: it must be an integer >= 16"),
    (["MODEL.EVAD.PRETRAIN_IMG_SIZE", "60"], f"{E}.PRETRAIN_IMG_SIZE = 60 is not allowed: it must be a multiple of {E}.PATCH_SIZE = 16"),
    (["MODEL.EVAD.KEEP_RATES", "[1.0, 0.0, 1.0, 0.7]"], f"{E}.KEEP_RATES[1] = 0.0 is not allowed: it must be a number in (0, 1]"),
    (["MODEL.EVAD.KEEP_RATES", "[1.0, 1.5, 1.0, 0.7]"], f"{E}.KEEP_RATES[1] = 1.5 is not allowed: it must be a number in (0, 1]"),
    (["MODEL.EVAD.KEEP_RATES", "[1.0, 0.7, 1.0]"], f"{E}.KEEP_RATES = [1.0, 0.7, 1.0] is not allowed: it must be a list of exactly 4 values"),
    (["MODEL.EVAD.KEYFRAME_WEIGHT", "-1.0"], f"{E}.KEYFRAME_WEIGHT = -1.0 is not allowed: it must be a number >= 0"),
    (["MODEL.EVAD.IMPORTANCE_IMPL", "fast"], f"{E}.IMPORTANCE_IMPL = 'fast' is not allowed: it must be one of ['auto',"),
    (["MODEL.EVAD.FEATURE_LAYERS", "[0, 1, 2, 4]"], f"{E}.FEATURE_LAYERS[3] = 4 is not allowed: it must be a block index in [0, {E}.DEPTH - 1 = 3]"),
    (["MODEL.EVAD.FEATURE_SCALES", "[4.0, 2.0, 1.0]"], f"{E}.FEATURE_SCALES = [4.0, 2.0, 1.0] is not allowed: it must be a list of exactly 4 values"),
    (["MODEL.EVAD.FEATURE_SCALES", "[4.0, 2.0, 1.0, 0.3]"], f"{E}.FEATURE_SCALES[3] = 0.3 is not allowed: it must be a number > 0 that makes stride"),
    (["MODEL.FPN.OUT_CHANNELS", "0"], "MODEL.FPN.OUT_CHANNELS = 0 is not allowed: it must be an integer >= 1"),
    # heads
    (["MODEL.EVAD.NUM_ACTION_CLASSES", "0"], f"{E}.NUM_ACTION_CLASSES = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.NUM_ACTION_CLASSES", "-3"], f"{E}.NUM_ACTION_CLASSES = -3 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.ACTION_HEAD", "mlp"], f"{E}.ACTION_HEAD = 'mlp' is not allowed: it must be one of ['decoder', 'linear']"
     " or a name in ACTION_HEAD_REGISTRY ['ContextRefinementHead', 'LinearActionHead']"),
    (["MODEL.EVAD.LOC.NAME", "SparseRCNN"],
     f"{E}.LOC.NAME = 'SparseRCNN' is not allowed: it must be a name in LOCALIZATION_HEAD_REGISTRY ['LocalizationHead']"),
    (["MODEL.EVAD.LOC.NUM_PROPOSALS", "0"], f"{E}.LOC.NUM_PROPOSALS = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.LOC.HIDDEN_DIM", "30"], f"{E}.LOC.HIDDEN_DIM = 30 is not allowed: it must be a multiple of {E}.LOC.NUM_HEADS = 4"),
    (["MODEL.EVAD.LOC.NUM_STAGES", "0"], f"{E}.LOC.NUM_STAGES = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.LOC.NUM_HEADS", "0"], f"{E}.LOC.NUM_HEADS = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.LOC.DIM_FEEDFORWARD", "0"], f"{E}.LOC.DIM_FEEDFORWARD = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.LOC.DIM_DYNAMIC", "0"], f"{E}.LOC.DIM_DYNAMIC = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.LOC.NUM_DYNAMIC", "3"], f"{E}.LOC.NUM_DYNAMIC = 3 is not allowed: it must be an integer in [2, 2]"),
    (["MODEL.EVAD.LOC.DROPOUT", "1.0"], f"{E}.LOC.DROPOUT = 1.0 is not allowed: it must be a number in [0, 1)"),
    (["MODEL.EVAD.LOC.IN_FEATURES", "[]"], f"{E}.LOC.IN_FEATURES = [] is not allowed: it must be a list of at least 1 values"),
    (["MODEL.EVAD.LOC.POOLER_RESOLUTION", "0"], f"{E}.LOC.POOLER_RESOLUTION = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.LOC.POOLER_SAMPLING_RATIO", "-1"], f"{E}.LOC.POOLER_SAMPLING_RATIO = -1 is not allowed: it must be an integer >= 0"),
    (["MODEL.EVAD.LOC.PROPOSAL_INIT", "random"], f"{E}.LOC.PROPOSAL_INIT = 'random' is not allowed: it must be one of ['image', 'grid']"),
    (["MODEL.EVAD.LOC.BBOX_WEIGHTS", "(2.0, 2.0, 1.0)"], f"{E}.LOC.BBOX_WEIGHTS = (2.0, 2.0, 1.0) is not allowed: it must be a list of exactly 4 values"),
    (["MODEL.EVAD.LOC.BBOX_WEIGHTS", "(2.0, 2.0, 0.0, 1.0)"], f"{E}.LOC.BBOX_WEIGHTS[2] = 0.0 is not allowed: it must be a number > 0"),
    (["MODEL.EVAD.LOC.SCORE_THRESH_TEST", "1.5"], f"{E}.LOC.SCORE_THRESH_TEST = 1.5 is not allowed: it must be a number in [0, 1]"),
    (["MODEL.EVAD.LOC.SCORE_THRESH_TEST", "-0.1"], f"{E}.LOC.SCORE_THRESH_TEST = -0.1 is not allowed: it must be a number in [0, 1]"),
    (["MODEL.EVAD.DECODER.DIM", "30"], f"{E}.DECODER.DIM = 30 is not allowed: it must be a multiple of {E}.DECODER.NUM_HEADS = 4"),
    (["MODEL.EVAD.DECODER.DEPTH", "0"], f"{E}.DECODER.DEPTH = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.DECODER.NUM_HEADS", "0"], f"{E}.DECODER.NUM_HEADS = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.DECODER.MLP_RATIO", "-1.0"], f"{E}.DECODER.MLP_RATIO = -1.0 is not allowed: it must be a number > 0"),
    (["MODEL.EVAD.DECODER.DROP_PATH_RATE", "-0.1"], f"{E}.DECODER.DROP_PATH_RATE = -0.1 is not allowed: it must be a number in [0, 1)"),
    (["MODEL.EVAD.DECODER.ROI_EXTEND", "(0.4,)"], f"{E}.DECODER.ROI_EXTEND = (0.4,) is not allowed: it must be a list of exactly 2 values"),
    (["MODEL.EVAD.DECODER.ROI_EXTEND", "(-0.1, 0.2)"], f"{E}.DECODER.ROI_EXTEND[0] = -0.1 is not allowed: it must be a number >= 0"),
    (["MODEL.EVAD.DECODER.POOLER_RESOLUTION", "0"], f"{E}.DECODER.POOLER_RESOLUTION = 0 is not allowed: it must be an integer >= 1"),
    (["MODEL.EVAD.DECODER.POOLER_SAMPLING_RATIO", "-1"], f"{E}.DECODER.POOLER_SAMPLING_RATIO = -1 is not allowed: it must be an integer >= 0"),
    (["MODEL.EVAD.DECODER.CLS_HIDDEN_DIM", "0"], f"{E}.DECODER.CLS_HIDDEN_DIM = 0 is not allowed: it must be an integer >= 1"),
] + [
    ([f"MODEL.EVAD.LOSS.{w}", "-1.0"], f"{E}.LOSS.{w} = -1.0 is not allowed: it must be a number >= 0")
    for w in ("CLASS_WEIGHT", "L1_WEIGHT", "GIOU_WEIGHT", "ACTION_WEIGHT", "NO_OBJECT_WEIGHT")
] + [
    # solver, loader, test
    (["SOLVER.OPTIMIZER", "LAMB"], "SOLVER.OPTIMIZER = 'LAMB' is not allowed: it must be one of ['ADAMW', 'SGD'] (any case)"),
    (["SOLVER.BASE_LR", "0.0"], "SOLVER.BASE_LR = 0.0 is not allowed: it must be a number > 0"),
    (["SOLVER.WEIGHT_DECAY", "-0.0001"], "SOLVER.WEIGHT_DECAY = -0.0001 is not allowed: it must be a number >= 0"),
    (["SOLVER.MOMENTUM", "1.0"], "SOLVER.MOMENTUM = 1.0 is not allowed: it must be a number in [0, 1)"),
    (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH = 0 is not allowed: it must be an integer >= 1"),
    (["SOLVER.MAX_EPOCHS", "-1"], "SOLVER.MAX_EPOCHS = -1 is not allowed: it must be a number >= 0"),
    (["SOLVER.STEP_EPOCHS", "(5, 13)"], "SOLVER.STEP_EPOCHS[1] = 13 is not allowed: it must be a number strictly inside (0, SOLVER.MAX_EPOCHS = 12)"),
    (["SOLVER.STEP_EPOCHS", "(0, 8)"], "SOLVER.STEP_EPOCHS[0] = 0 is not allowed"),
    (["SOLVER.WARMUP_EPOCHS", "12.0"], "SOLVER.WARMUP_EPOCHS = 12.0 is not allowed: it must be a number in [0, 12)"),
    (["SOLVER.MAX_EPOCHS", "0", "SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER = 0 is not allowed: it must be an integer >= 1"),
    (["SOLVER.MAX_EPOCHS", "0", "SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(4, 6)"], "SOLVER.STEPS[1] = 6 is not allowed: it must be an integer strictly inside (0, SOLVER.MAX_ITER = 6)"),
    (["SOLVER.MAX_EPOCHS", "0", "SOLVER.WARMUP_ITERS", "-1"], "SOLVER.WARMUP_ITERS = -1 is not allowed: it must be an integer >= 0"),
    (["SOLVER.WARMUP_FACTOR", "1.5"], "SOLVER.WARMUP_FACTOR = 1.5 is not allowed: it must be a number in [0, 1]"),
    (["SOLVER.WARMUP_METHOD", "cosine"], "SOLVER.WARMUP_METHOD = 'cosine' is not allowed: it must be one of ['linear', 'constant']"),
    (["SOLVER.GAMMA", "0.0"], "SOLVER.GAMMA = 0.0 is not allowed: it must be a number in (0, 1]"),
    (["SOLVER.LAYER_DECAY", "1.5"], "SOLVER.LAYER_DECAY = 1.5 is not allowed: it must be a number in (0, 1]"),
    (["SOLVER.BACKBONE_MULTIPLIER", "-1.0"], "SOLVER.BACKBONE_MULTIPLIER = -1.0 is not allowed: it must be a number >= 0"),
    (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD = 0 is not allowed: it must be an integer >= 1"),
    (["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "l2"],
     "SOLVER.CLIP_GRADIENTS.CLIP_TYPE = 'l2' is not allowed: it must be one of ['value', 'norm', 'full_model']"),
    (["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.0"],
     "SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.0 is not allowed: it must be a number > 0"),
    (["SOLVER.AMP.PRECISION", "int8"], "SOLVER.AMP.PRECISION = 'int8' is not allowed: it must be one of ['float16', 'bfloat16']"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS = -1 is not allowed: it must be an integer >= 0"),
    (["TEST.EVAL_PERIOD", "-1"], "TEST.EVAL_PERIOD = -1 is not allowed: it must be an integer >= 0"),
    (["SEED", "-2"], "SEED = -2 is not allowed: it must be an integer >= -1"),
    (["TEST.AVA_PROTOCOL", "act"], "TEST.AVA_PROTOCOL = 'act' is not allowed: it must be one of ['pyslowfast', 'activitynet']"),
    (["TEST.UCF_JHMDB_PROTOCOL", "pyslowfast"],
     "TEST.UCF_JHMDB_PROTOCOL = 'pyslowfast' is not allowed: it must be one of ['act', 'voc']"),
]


@pytest.mark.parametrize("opts, message", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_config_value_is_refused_at_load_naming_key_value_and_range(opts, message):
    with pytest.raises(ConfigValueError) as err:
        get_evad_cfg(TINY, opts)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{TINY} with overrides {opts}: config key ")


def test_every_default_and_edge_value_is_accepted():
    check_evad_cfg(add_evad_config(get_cfg()))  # EVAD's defaults
    edges = [
        "INPUT.KEYFRAME_INDEX", "0", "INPUT.SAMPLING_RATE", "1", "INPUT.COLOR_JITTER", "1.0",
        "MODEL.EVAD.KEEP_RATES", "[1.0, 0.01, 1.0, 1.0]", "MODEL.EVAD.KEYFRAME_WEIGHT", "0.0",
        "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "1.0", "MODEL.EVAD.LOC.POOLER_SAMPLING_RATIO", "0",
        "MODEL.EVAD.NUM_ACTION_CLASSES", "1", "SOLVER.WARMUP_EPOCHS", "0.0", "SOLVER.STEP_EPOCHS", "()",
        "SOLVER.LAYER_DECAY", "1.0", "SEED", "-1", "SOLVER.OPTIMIZER", "adamw",
        "TEST.AVA_PROTOCOL", "activitynet", "TEST.UCF_JHMDB_PROTOCOL", "voc",
        "MODEL.EVAD.ACTION_HEAD", "ContextRefinementHead", "MODEL.EVAD.LOC.NAME", "LocalizationHead",
    ]
    check_evad_cfg(get_evad_cfg(TINY, edges))


def test_batch_must_split_over_the_processes():
    cfg = get_evad_cfg(TINY, ["SOLVER.IMS_PER_BATCH", "3"])
    check_batch_split(cfg, 1)
    check_batch_split(cfg, 3)
    with pytest.raises(ConfigValueError, match=r"SOLVER.IMS_PER_BATCH = 3 is not allowed: it must be a multiple of the number of processes \(2\)"):
        check_batch_split(cfg, 2)


def test_config_check_errors_name_the_file_without_overrides(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{TINY}"\nINPUT:\n  SAMPLING_RATE: 0\n')
    with pytest.raises(ConfigValueError, match=rf"^{bad}: config key INPUT.SAMPLING_RATE = 0 is not allowed"):
        get_evad_cfg(str(bad))


ALL_YAML = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def _resolved(path=None):
    cfg = add_evad_config(get_cfg())
    if path:
        cfg.merge_from_file(path, allow_unsafe=False)
    return cfg


def _leaf_keys(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaf_keys(v, prefix + (k,))
        else:
            yield prefix + (k,)


def _get(cfg, key):
    for k in key:
        cfg = cfg[k]
    return cfg


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: os.path.relpath(p, ROOT))
def test_a_config_states_only_its_differences_from_its_base(path):
    """Defaults are stated once (evad_d2/config.py): no YAML key repeats the value its _BASE_ (or,
    without one, add_evad_config on detectron2's defaults) already resolves to, so a diff of two
    configs shows what one changes. VERSION marks the file format, not a setting."""
    import yaml

    with open(path) as f:
        raw = yaml.safe_load(f)
    base = raw.pop("_BASE_", None)
    version = raw.pop("VERSION", None)
    if base is None:  # else detectron2 warns "has no VERSION" for every config built on it
        assert version == 2, f"{os.path.relpath(path, ROOT)} has no _BASE_, so it must state VERSION: 2"
    parent = _resolved(os.path.join(os.path.dirname(path), base) if base else None)
    child = _resolved(path)
    repeated = [".".join(k) for k in _leaf_keys(raw) if _get(parent, k) == _get(child, k)]
    assert not repeated, f"{os.path.relpath(path, ROOT)} repeats its base's values of {repeated}"


def test_add_evad_config_sets_no_detectron2_key_to_detectron2s_own_default(monkeypatch):
    """config.py sets detectron2's own keys (INPUT.*, SOLVER.*, MODEL.PIXEL_MEAN) only where EVAD's
    default differs: each assignment over an existing key must change its value."""
    from detectron2.config import CfgNode

    same = []
    original = CfgNode.__setattr__

    def recording(self, name, value):
        if name in self and self[name] == value:
            same.append(name)
        original(self, name, value)

    monkeypatch.setattr(CfgNode, "__setattr__", recording)
    add_evad_config(get_cfg())
    assert same == []
