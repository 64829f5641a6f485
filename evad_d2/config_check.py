"""Every value of an EVAD config checked once, before anything is built.

``check_evad_cfg(cfg)`` raises a :class:`ConfigValueError` naming the key, its value and the
allowed range for the first value that cannot work (a sampling rate of 0 samples 16 copies of the
keyframe, a negative one a reversed clip; 0 action classes predicts nothing, ...). It is called by
``get_evad_cfg`` (so by ``train_net.py`` and every tool); code that builds a config by hand
(``add_evad_config`` + merges) should call it before building a model. The check that depends on
the number of processes, :func:`check_batch_split`, is called by ``evad_d2.engine.trainer.setup``.
"""
import math
from numbers import Integral, Real
from typing import Optional

from .evaluation.ava import PROTOCOLS as AVA_PROTOCOLS
from .evaluation.ucf_jhmdb import PROTOCOLS as UCF_JHMDB_PROTOCOLS
from .modeling.backbone.pruning import PRUNING_SCORES
from .modeling.heads import ACTION_HEAD_REGISTRY, ACTION_HEAD_SHORT_NAMES, LOCALIZATION_HEAD_REGISTRY

__all__ = [
    "ConfigValueError",
    "check_action_head_cfg",
    "check_backbone_cfg",
    "check_batch_split",
    "check_epoch_schedule",
    "check_evad_cfg",
    "check_heads_cfg",
    "check_input_cfg",
    "check_optimizer_cfg",
    "check_solver_cfg",
]

IMPORTANCE_IMPLS = ("auto", "logsumexp", "recompute", "explicit")
PROPOSAL_INITS = ("image", "grid")
OPTIMIZERS = ("ADAMW", "SGD")
CLIP_TYPES = ("value", "norm", "full_model")
AMP_PRECISIONS = ("float16", "bfloat16")
RANDOM_FLIPS = ("none", "horizontal", "vertical")
INPUT_FORMATS = ("RGB", "BGR")
SIZE_SAMPLING = ("choice", "range")


class ConfigValueError(ValueError):
    """A config value outside what EVAD can run with; the message names key, value and range."""


def _fail(key: str, value, allowed: str, why: str = ""):
    raise ConfigValueError(f"config key {key} = {value!r} is not allowed: it must be {allowed}" + (f" ({why})" if why else ""))


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _int(cfg, key: str, low: int, high: Optional[int] = None, why: str = "") -> int:
    """An integer in [low, high] (high None: no upper bound)."""
    v = _get(cfg, key)
    if not _is_int(v) or v < low or (high is not None and v > high):
        _fail(key, v, f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]", why)
    return v


def _real(cfg, key: str, low: float, high: float = math.inf, *, low_open=False, high_open=False, why: str = "") -> float:
    """A finite number in the interval from low to high (bounds closed unless ``*_open``)."""
    v = _get(cfg, key)
    ok = _is_real(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        if high == math.inf:
            allowed = f"a number {'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        _fail(key, v, allowed, why)
    return float(v)


def _choice(cfg, key: str, choices):
    v = _get(cfg, key)
    if v not in choices:
        _fail(key, v, f"one of {list(choices)}")
    return v


def _registered(cfg, key: str, registry, registry_name: str, short_names=()):
    """A name in ``registry`` (or one of ``short_names``); the names are read when checking, so
    that heads registered after import are accepted."""
    v = _get(cfg, key)
    if v not in short_names and v not in registry:
        registered = sorted(name for name, _ in registry)
        short = f"one of {list(short_names)} or " if short_names else ""
        _fail(key, v, f"{short}a name in {registry_name} {registered}")
    return v


def _seq(cfg, key: str, length: Optional[int] = None, min_length: int = 1, why: str = ""):
    """A list/tuple of ``length`` items (or at least ``min_length``)."""
    v = _get(cfg, key)
    if not isinstance(v, (list, tuple)) or (length is not None and len(v) != length) or len(v) < min_length:
        n = f"exactly {length}" if length is not None else f"at least {min_length}"
        _fail(key, v, f"a list of {n} values", why)
    return list(v)


def _items(key: str, values, test, allowed: str, why: str = ""):
    for i, x in enumerate(values):
        if not test(x):
            _fail(f"{key}[{i}]", x, allowed, why)


def _divisible(cfg, key: str, divisor_key: str):
    v, d = _get(cfg, key), _get(cfg, divisor_key)
    if v % d:
        _fail(key, v, f"a multiple of {divisor_key} = {d}")


def check_batch_split(cfg, world_size: int) -> None:
    """SOLVER.IMS_PER_BATCH (the total over all processes) splits evenly over ``world_size``."""
    batch = _get(cfg, "SOLVER.IMS_PER_BATCH")
    if batch % world_size:
        _fail("SOLVER.IMS_PER_BATCH", batch, f"a multiple of the number of processes ({world_size})", "each process takes an equal share")


def check_optimizer_cfg(cfg) -> None:
    """The keys ``evad_d2.engine.build_optimizer`` reads (it calls this too)."""
    v = _get(cfg, "SOLVER.OPTIMIZER")
    if not isinstance(v, str) or v.upper() not in OPTIMIZERS:
        _fail("SOLVER.OPTIMIZER", v, f"one of {list(OPTIMIZERS)} (any case)")
    _real(cfg, "SOLVER.BASE_LR", 0, low_open=True)
    _real(cfg, "SOLVER.WEIGHT_DECAY", 0)
    _real(cfg, "SOLVER.MOMENTUM", 0, 1, high_open=True)
    _real(cfg, "SOLVER.LAYER_DECAY", 0, 1, low_open=True, why="1 = off")
    _real(cfg, "SOLVER.BACKBONE_MULTIPLIER", 0)
    if _get(cfg, "SOLVER.CLIP_GRADIENTS.ENABLED"):
        _choice(cfg, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", CLIP_TYPES)
        _real(cfg, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0, low_open=True)
        _real(cfg, "SOLVER.CLIP_GRADIENTS.NORM_TYPE", 0, low_open=True)


def check_epoch_schedule(cfg) -> None:
    """SOLVER.MAX_EPOCHS / STEP_EPOCHS / WARMUP_EPOCHS (or MAX_ITER / STEPS / WARMUP_ITERS when
    MAX_EPOCHS is 0) form a valid schedule."""
    max_epochs = _real(cfg, "SOLVER.MAX_EPOCHS", 0, why="0 uses SOLVER.MAX_ITER and SOLVER.STEPS")
    if max_epochs > 0:
        steps = _seq(cfg, "SOLVER.STEP_EPOCHS", min_length=0)
        _items("SOLVER.STEP_EPOCHS", steps, lambda e: _is_real(e) and 0 < e < max_epochs,
               f"a number strictly inside (0, SOLVER.MAX_EPOCHS = {max_epochs:g})")
        _real(cfg, "SOLVER.WARMUP_EPOCHS", 0, max_epochs, high_open=True, why=f"SOLVER.MAX_EPOCHS = {max_epochs:g}")
    else:
        max_iter = _int(cfg, "SOLVER.MAX_ITER", 1)
        steps = _seq(cfg, "SOLVER.STEPS", min_length=0)
        _items("SOLVER.STEPS", steps, lambda s: _is_int(s) and 0 < s < max_iter,
               f"an integer strictly inside (0, SOLVER.MAX_ITER = {max_iter})")
        _int(cfg, "SOLVER.WARMUP_ITERS", 0)


def check_evad_cfg(cfg) -> None:
    """Raise a ConfigValueError for the first EVAD value that cannot work; return None if all can.

    The checks run by topic, in this order (each its own function, callable alone).

    Args:
        cfg: a config with EVAD's keys (``get_evad_cfg``/``add_evad_config``), frozen or not.
    """
    check_input_cfg(cfg)
    check_backbone_cfg(cfg)
    check_heads_cfg(cfg)
    check_action_head_cfg(cfg)
    check_solver_cfg(cfg)


def check_input_cfg(cfg) -> None:
    """INPUT.* (clip length, keyframe, sizes, augmentation) and MODEL.PIXEL_MEAN/STD."""
    e = "MODEL.EVAD"
    tubelet = _int(cfg, f"{e}.TUBELET_SIZE", 1, why="frames per temporal token")
    num_frames = _int(cfg, "INPUT.NUM_FRAMES", 1)
    if num_frames % tubelet:
        _fail("INPUT.NUM_FRAMES", num_frames, f"a multiple of {e}.TUBELET_SIZE = {tubelet}", "the clip is cut into tubelets")
    _int(cfg, "INPUT.SAMPLING_RATE", 1, why="the stride between sampled frames: 0 repeats the keyframe, < 0 reverses the clip")
    kf = _get(cfg, "INPUT.KEYFRAME_INDEX")
    if not _is_int(kf) or not (kf == -1 or 0 <= kf < num_frames):
        _fail("INPUT.KEYFRAME_INDEX", kf, f"-1 (the middle frame) or an integer in [0, INPUT.NUM_FRAMES - 1 = {num_frames - 1}]")
    sizes = _seq(cfg, "INPUT.MIN_SIZE_TRAIN")
    _items("INPUT.MIN_SIZE_TRAIN", sizes, lambda s: _is_int(s) and s >= 1, "an integer >= 1")
    sampling = _choice(cfg, "INPUT.MIN_SIZE_TRAIN_SAMPLING", SIZE_SAMPLING)
    if sampling == "range":
        _seq(cfg, "INPUT.MIN_SIZE_TRAIN", length=2, why=f"INPUT.MIN_SIZE_TRAIN_SAMPLING {sampling!r} draws between two sizes")
    _int(cfg, "INPUT.MAX_SIZE_TRAIN", 1)
    _int(cfg, "INPUT.MIN_SIZE_TEST", 1)
    _int(cfg, "INPUT.MAX_SIZE_TEST", 1)
    _real(cfg, "INPUT.COLOR_JITTER", 0, 1, why="factors are drawn from [1 - strength, 1 + strength]; 0 disables")
    _choice(cfg, "INPUT.FORMAT", INPUT_FORMATS)
    _choice(cfg, "INPUT.RANDOM_FLIP", RANDOM_FLIPS)
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"):
        values = _seq(cfg, key, length=3, why="one value per colour channel")
        positive = key.endswith("STD")
        _items(key, values, lambda x: _is_real(x) and (x > 0 if positive else True), "a number > 0" if positive else "a finite number")


def check_backbone_cfg(cfg) -> None:
    """The pruning ViT (MODEL.EVAD.*: sizes, keep rates, feature layers) and its FPN width."""
    e = "MODEL.EVAD"
    _int(cfg, f"{e}.EMBED_DIM", 1)
    depth = _int(cfg, f"{e}.DEPTH", 1)
    _int(cfg, f"{e}.NUM_HEADS", 1)
    _divisible(cfg, f"{e}.EMBED_DIM", f"{e}.NUM_HEADS")
    _real(cfg, f"{e}.MLP_RATIO", 0, low_open=True)
    patch = _int(cfg, f"{e}.PATCH_SIZE", 1)
    _real(cfg, f"{e}.DROP_PATH_RATE", 0, 1, high_open=True)
    _int(cfg, f"{e}.PRETRAIN_IMG_SIZE", patch, why=f"at least one {e}.PATCH_SIZE = {patch}")
    _divisible(cfg, f"{e}.PRETRAIN_IMG_SIZE", f"{e}.PATCH_SIZE")
    rates = _seq(cfg, f"{e}.KEEP_RATES", length=depth, why=f"one keep rate per encoder block, {e}.DEPTH = {depth}")
    _items(f"{e}.KEEP_RATES", rates, lambda r: _is_real(r) and 0 < r <= 1, "a number in (0, 1]")
    _real(cfg, f"{e}.KEYFRAME_WEIGHT", 0, why="w_kf of eq. 3")
    _choice(cfg, f"{e}.IMPORTANCE_IMPL", IMPORTANCE_IMPLS)
    _choice(cfg, f"{e}.PRUNING_SCORE", PRUNING_SCORES)
    layers = _seq(cfg, f"{e}.FEATURE_LAYERS")
    _items(f"{e}.FEATURE_LAYERS", layers, lambda i: _is_int(i) and 0 <= i < depth, f"a block index in [0, {e}.DEPTH - 1 = {depth - 1}]")
    scales = _seq(cfg, f"{e}.FEATURE_SCALES", length=len(layers), why=f"one per {e}.FEATURE_LAYERS entry")
    # Each scale turns stride PATCH_SIZE into a power-of-2 stride of the FPN.
    _items(f"{e}.FEATURE_SCALES", scales, lambda s: _is_real(s) and s > 0 and math.log2(patch / s).is_integer(),
           f"a number > 0 that makes stride {e}.PATCH_SIZE = {patch} a power of 2")
    _int(cfg, "MODEL.FPN.OUT_CHANNELS", 1)


def check_heads_cfg(cfg) -> None:
    """The number of classes, the heads' registry names and the localization head (MODEL.EVAD.LOC.*)."""
    e = "MODEL.EVAD"
    _int(cfg, f"{e}.NUM_ACTION_CLASSES", 1)
    _registered(cfg, f"{e}.ACTION_HEAD", ACTION_HEAD_REGISTRY, "ACTION_HEAD_REGISTRY", ACTION_HEAD_SHORT_NAMES)
    loc = f"{e}.LOC"
    _registered(cfg, f"{loc}.NAME", LOCALIZATION_HEAD_REGISTRY, "LOCALIZATION_HEAD_REGISTRY")
    _int(cfg, f"{loc}.NUM_PROPOSALS", 1)
    _int(cfg, f"{loc}.HIDDEN_DIM", 1)
    _int(cfg, f"{loc}.NUM_STAGES", 1)
    _int(cfg, f"{loc}.NUM_HEADS", 1)
    _divisible(cfg, f"{loc}.HIDDEN_DIM", f"{loc}.NUM_HEADS")
    _int(cfg, f"{loc}.DIM_FEEDFORWARD", 1)
    _int(cfg, f"{loc}.DIM_DYNAMIC", 1)
    _int(cfg, f"{loc}.NUM_DYNAMIC", 2, 2, why="Sparse R-CNN's dynamic convolution has two layers")
    _real(cfg, f"{loc}.DROPOUT", 0, 1, high_open=True)
    _seq(cfg, f"{loc}.IN_FEATURES")
    _int(cfg, f"{loc}.POOLER_RESOLUTION", 1)
    _int(cfg, f"{loc}.POOLER_SAMPLING_RATIO", 0, why="0 = adaptive")
    _choice(cfg, f"{loc}.PROPOSAL_INIT", PROPOSAL_INITS)
    weights = _seq(cfg, f"{loc}.BBOX_WEIGHTS", length=4, why="weights of dx, dy, dw, dh")
    _items(f"{loc}.BBOX_WEIGHTS", weights, lambda w: _is_real(w) and w > 0, "a number > 0")
    _real(cfg, f"{loc}.SCORE_THRESH_TEST", 0, 1, why="a person probability")


def _check_actor_pooler_cfg(cfg, prefix: str) -> None:
    """An action head's 3D RoIAlign keys: ``prefix``.{ROI_EXTEND, POOLER_RESOLUTION, POOLER_SAMPLING_RATIO}."""
    extend = _seq(cfg, f"{prefix}.ROI_EXTEND", length=2, why="the (x, y) extension ratios")
    _items(f"{prefix}.ROI_EXTEND", extend, lambda r: _is_real(r) and r >= 0, "a number >= 0")
    _int(cfg, f"{prefix}.POOLER_RESOLUTION", 1)
    _int(cfg, f"{prefix}.POOLER_SAMPLING_RATIO", 0, why="0 = adaptive")


def check_action_head_cfg(cfg) -> None:
    """The action heads (MODEL.EVAD.DECODER.*, MODEL.EVAD.LINEAR_HEAD.*) and the loss weights."""
    e = "MODEL.EVAD"
    dec = f"{e}.DECODER"
    _int(cfg, f"{dec}.DIM", 1)
    _int(cfg, f"{dec}.DEPTH", 1)
    _int(cfg, f"{dec}.NUM_HEADS", 1)
    _divisible(cfg, f"{dec}.DIM", f"{dec}.NUM_HEADS")
    _real(cfg, f"{dec}.MLP_RATIO", 0, low_open=True)
    _real(cfg, f"{dec}.DROP_PATH_RATE", 0, 1, high_open=True)
    _check_actor_pooler_cfg(cfg, dec)
    _int(cfg, f"{dec}.CLS_HIDDEN_DIM", 1)
    _check_actor_pooler_cfg(cfg, f"{e}.LINEAR_HEAD")
    for w in ("CLASS_WEIGHT", "L1_WEIGHT", "GIOU_WEIGHT", "ACTION_WEIGHT", "NO_OBJECT_WEIGHT"):
        _real(cfg, f"{e}.LOSS.{w}", 0)


def check_solver_cfg(cfg) -> None:
    """SOLVER.*, DATALOADER.*, TEST.* and SEED."""
    check_optimizer_cfg(cfg)
    _int(cfg, "SOLVER.IMS_PER_BATCH", 1)
    check_epoch_schedule(cfg)
    _real(cfg, "SOLVER.WARMUP_FACTOR", 0, 1)
    _choice(cfg, "SOLVER.WARMUP_METHOD", ("linear", "constant"))
    _real(cfg, "SOLVER.GAMMA", 0, 1, low_open=True)
    _int(cfg, "SOLVER.CHECKPOINT_PERIOD", 1)
    _choice(cfg, "SOLVER.AMP.PRECISION", AMP_PRECISIONS)
    _int(cfg, "DATALOADER.NUM_WORKERS", 0)
    _int(cfg, "TEST.EVAL_PERIOD", 0, why="0 evaluates at the end only")
    _choice(cfg, "TEST.AVA_PROTOCOL", AVA_PROTOCOLS)
    _choice(cfg, "TEST.UCF_JHMDB_PROTOCOL", UCF_JHMDB_PROTOCOLS)
    _int(cfg, "SEED", -1, why="-1 draws a random seed")
