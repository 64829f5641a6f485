"""EVAD's config keys: the one home of their defaults, the paper's ViT-B AVA v2.2 setting
(appendix A/B; where the paper is silent, the released official ViT-B configs).

Every key carries a comment; detectron2's own keys that EVAD reuses (MODEL.PIXEL_MEAN,
INPUT.MIN_SIZE_TEST, SOLVER.*) are set here only where EVAD's default differs from detectron2's.
The YAML files under configs/ state only their differences from their ``_BASE_`` (checked by
tests/test_config.py), so a diff between two configs shows what an ablation changes.
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .config_check import ConfigValueError, check_evad_cfg
from .evaluation.ava import DEFAULT_PROTOCOL as AVA_DEFAULT_PROTOCOL
from .evaluation.ucf_jhmdb.protocols import DEFAULT_PROTOCOL as UCF_JHMDB_DEFAULT_PROTOCOL

__all__ = ["ConfigValueError", "add_evad_config", "check_evad_cfg", "get_evad_cfg"]


def add_evad_config(cfg):
    """Add EVAD's keys to a detectron2 config (in place) and return it. Calling it twice is harmless.

    The defaults table, by topic (each group below says where its values come from).
    """
    _add_input_config(cfg)
    _add_backbone_config(cfg)
    _add_head_config(cfg)
    _add_training_config(cfg)
    return cfg


def _add_input_config(_C) -> None:
    """INPUT.*, the pixel statistics and DATASETS.AVA.*."""
    # ---------------------------------------------------------------- input
    # Frames per clip (T) and the stride between sampled frames (tau): 16x4 in the paper.
    _C.INPUT.NUM_FRAMES = 16
    _C.INPUT.SAMPLING_RATE = 4
    # Index of the keyframe among the T sampled frames; -1 means the middle frame (T // 2).
    _C.INPUT.KEYFRAME_INDEX = -1
    # Training short-side scales (one drawn per clip); AVA ablations use 224. The long-side caps
    # INPUT.MAX_SIZE_TRAIN / MAX_SIZE_TEST keep detectron2's 1333.
    _C.INPUT.MIN_SIZE_TRAIN = (224,)
    # Test short side (224, 256 or 288 in the paper).
    _C.INPUT.MIN_SIZE_TEST = 224
    # Random colour jitter (brightness/contrast/saturation strength; 0 disables), same for all frames.
    _C.INPUT.COLOR_JITTER = 0.0
    # Pixels enter the model as RGB in [0, 255]; normalisation uses MODEL.PIXEL_MEAN/STD.
    _C.INPUT.FORMAT = "RGB"
    # VideoMAE statistics (0.45, 0.225 on [0, 1]) expressed on [0, 255].
    _C.MODEL.PIXEL_MEAN = [114.75, 114.75, 114.75]
    _C.MODEL.PIXEL_STD = [57.375, 57.375, 57.375]

    # ---------------------------------------------------------------- datasets
    _C.DATASETS.AVA = CN()
    # Dataset roots are not config keys: builtin names register under $EVAD_DATASETS (see
    # datasets/README.md); other roots via evad_d2.data.register_ava / register_ucf_jhmdb.
    # Training only: skip bad samples (videos that do not open, frame folders with gaps, clips that do
    # not decode) instead of stopping; each skip is logged, an epoch summary follows, all-bad is an
    # error (evad_d2/data/bad_samples.py). Off so that nothing is dropped without a decision.
    _C.DATASETS.AVA.SKIP_BAD_SAMPLES = False


def _add_backbone_config(_C) -> None:
    """MODEL.EVAD.*: the pruning video ViT and its feature maps."""
    # ---------------------------------------------------------------- backbone: pruning video ViT
    _C.MODEL.EVAD = CN()
    # Token width, number of blocks and heads (ViT-B: 768/12/12, ViT-L: 1024/24/16).
    _C.MODEL.EVAD.EMBED_DIM = 768
    _C.MODEL.EVAD.DEPTH = 12
    _C.MODEL.EVAD.NUM_HEADS = 12
    # FFN hidden width as a multiple of EMBED_DIM.
    _C.MODEL.EVAD.MLP_RATIO = 4.0
    # Query/value biases (VideoMAE's q_bias/v_bias; the key bias is zero).
    _C.MODEL.EVAD.QKV_BIAS = True
    # Spatial patch size and temporal tubelet size of the cube embedding (2x16x16).
    _C.MODEL.EVAD.PATCH_SIZE = 16
    _C.MODEL.EVAD.TUBELET_SIZE = 2
    # Stochastic depth rate at the last block (linearly increasing from 0). The paper gives no
    # value; 0.1 is the released official ViT-B configs' ViT.DROP_PATH_RATE (was 0.2 here, "the
    # paper's setting", which the paper does not state, while every config set 0.1).
    _C.MODEL.EVAD.DROP_PATH_RATE = 0.1
    # Learned position embedding instead of VideoMAE's fixed sin-cos table.
    _C.MODEL.EVAD.LEARNABLE_POS_EMBED = False
    # Input size the position table was defined for; other sizes interpolate it spatially.
    _C.MODEL.EVAD.PRETRAIN_IMG_SIZE = 224
    # Recompute block activations in backward to save memory (activation checkpointing).
    _C.MODEL.EVAD.USE_CHECKPOINT = False
    # Keep rate of each encoder block (len == DEPTH); < 1 prunes inside that block.
    # ViT-B default: rho=0.7 at the 4th, 7th and 10th blocks (ViT-L: 7th, 13th, 19th).
    _C.MODEL.EVAD.KEEP_RATES = [1.0, 1.0, 1.0, 0.7, 1.0, 1.0, 0.7, 1.0, 1.0, 0.7, 1.0, 1.0]
    # w_kf: weight of keyframe queries in the importance score (paper eq. 3).
    _C.MODEL.EVAD.KEYFRAME_WEIGHT = 1.0
    # How pruning blocks compute eq. 3: "auto" (log-sum-exp from the CPU flash kernel, else
    # block-wise recompute), "logsumexp", "recompute" or "explicit" (full attention map).
    _C.MODEL.EVAD.IMPORTANCE_IMPL = "auto"
    # How pruning blocks rank the non-keyframe tokens: "attention" (the paper's eq. 3) or "random"
    # (the random-dropping baseline: the same counts, every keyframe token kept, a uniformly random
    # subset of the others; seeded anew at each evaluation, so an evaluation repeats exactly).
    _C.MODEL.EVAD.PRUNING_SCORE = "attention"
    # 0-based blocks whose keyframe tokens feed the simple FPN (outputs of layers 3, 6, 9, 12).
    _C.MODEL.EVAD.FEATURE_LAYERS = [2, 5, 8, 11]
    # Resize factors applied to those keyframe maps (strides 4, 8, 16, 32 from stride 16).
    _C.MODEL.EVAD.FEATURE_SCALES = [4.0, 2.0, 1.0, 0.5]
    # detectron2's FPN width is reused: MODEL.FPN.OUT_CHANNELS (detectron2's default, 256).


def _add_head_config(_C) -> None:
    """MODEL.EVAD.*: classes, localization head (LOC), action head (DECODER), OFFICIAL_MODE."""
    # ---------------------------------------------------------------- action classes
    # Number of action classes the classifier predicts (80 for AVA training).
    _C.MODEL.EVAD.NUM_ACTION_CLASSES = 80
    # Name of the action head in ACTION_HEAD_REGISTRY, or "decoder" (ContextRefinementHead, the
    # context refinement decoder) or "linear" (LinearActionHead, the paper's Table 1a baseline).
    _C.MODEL.EVAD.ACTION_HEAD = "decoder"

    # ---------------------------------------------------------------- localization head (Sparse R-CNN)
    _C.MODEL.EVAD.LOC = CN()
    # Name of the localization head in LOCALIZATION_HEAD_REGISTRY.
    _C.MODEL.EVAD.LOC.NAME = "LocalizationHead"
    # Number of learnable proposals (n) and their feature width.
    _C.MODEL.EVAD.LOC.NUM_PROPOSALS = 100
    _C.MODEL.EVAD.LOC.HIDDEN_DIM = 256
    # Dynamic instance interaction stages, heads of the proposal self-attention, FFN width.
    _C.MODEL.EVAD.LOC.NUM_STAGES = 6
    _C.MODEL.EVAD.LOC.NUM_HEADS = 8
    _C.MODEL.EVAD.LOC.DIM_FEEDFORWARD = 2048
    # Width and number of the dynamic (proposal-conditioned) layers.
    _C.MODEL.EVAD.LOC.DIM_DYNAMIC = 64
    _C.MODEL.EVAD.LOC.NUM_DYNAMIC = 2
    # Dropout inside the stages.
    _C.MODEL.EVAD.LOC.DROPOUT = 0.0
    # FPN levels pooled by RoIAlign, output size and sampling ratio.
    _C.MODEL.EVAD.LOC.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    _C.MODEL.EVAD.LOC.POOLER_RESOLUTION = 7
    _C.MODEL.EVAD.LOC.POOLER_SAMPLING_RATIO = 2
    # Initial proposal boxes: "image" (all the whole image; Sparse R-CNN/WOO/EVAD) or "grid" (tiled).
    _C.MODEL.EVAD.LOC.PROPOSAL_INIT = "image"
    # Start the box regressors at zero (first boxes = the proposals); off = the paper's Xavier init.
    _C.MODEL.EVAD.LOC.ZERO_INIT_BOX_DELTAS = False
    # Weights of the (dx, dy, dw, dh) box deltas.
    _C.MODEL.EVAD.LOC.BBOX_WEIGHTS = (2.0, 2.0, 1.0, 1.0)
    # Person probability a proposal needs to be output at inference (paper: 0.7).
    _C.MODEL.EVAD.LOC.SCORE_THRESH_TEST = 0.7
    # Output every proposal of a clip where none passes the threshold (official behaviour).
    _C.MODEL.EVAD.LOC.KEEP_ALL_IF_NONE = False

    # ---------------------------------------------------------------- action head (context refinement)
    _C.MODEL.EVAD.DECODER = CN()
    # Decoder width, depth and heads (ViT-B: 384/6/6; ViT-L: 512/12/8).
    _C.MODEL.EVAD.DECODER.DIM = 384
    _C.MODEL.EVAD.DECODER.DEPTH = 6
    _C.MODEL.EVAD.DECODER.NUM_HEADS = 6
    _C.MODEL.EVAD.DECODER.MLP_RATIO = 4.0
    # Stochastic depth in the decoder: the released official ViT-B configs' MODEL.CRD.DROP_PATH_RATE
    # (the paper gives no value).
    _C.MODEL.EVAD.DECODER.DROP_PATH_RATE = 0.1
    # RoI extension (x, y): each side grows by ratio * size / 2 (x1.4 width, x1.2 height = 1.68x area).
    _C.MODEL.EVAD.DECODER.ROI_EXTEND = (0.4, 0.2)
    # Output size and sampling ratio of the per-slice RoIAlign of the 3D RoIAlign.
    _C.MODEL.EVAD.DECODER.POOLER_RESOLUTION = 7
    _C.MODEL.EVAD.DECODER.POOLER_SAMPLING_RATIO = 2
    # Hidden width of each per-layer action classifier.
    _C.MODEL.EVAD.DECODER.CLS_HIDDEN_DIM = 2048
    # Reproduce the official code's token-order bug (only for converted official checkpoints).
    _C.MODEL.EVAD.DECODER.OFFICIAL_TOKEN_ORDER = False

    # ---------------------------------------------------------------- action head (linear baseline)
    # MODEL.EVAD.ACTION_HEAD "linear" (Table 1a): its 3D RoIAlign, as the decoder's above.
    _C.MODEL.EVAD.LINEAR_HEAD = CN()
    _C.MODEL.EVAD.LINEAR_HEAD.ROI_EXTEND = (0.4, 0.2)
    _C.MODEL.EVAD.LINEAR_HEAD.POOLER_RESOLUTION = 7
    _C.MODEL.EVAD.LINEAR_HEAD.POOLER_SAMPLING_RATIO = 2

    # Official-checkpoint mode: compute what the official code computes, for converted official
    # checkpoints. Turns on DECODER.OFFICIAL_TOKEN_ORDER and LOC.KEEP_ALL_IF_NONE, and the official
    # person threshold (>=), box clipping ([0, w-1] x [0, h-1], empty boxes kept) and test resize
    # (OpenCV's uint8 bilinear); see evad_d2.modeling.meta_arch.evad.OFFICIAL_MODE.
    _C.MODEL.EVAD.OFFICIAL_MODE = False


def _add_training_config(_C) -> None:
    """MODEL.EVAD.CHECKPOINT/LOSS, SOLVER.* and the evaluation protocols (TEST.*)."""
    # ---------------------------------------------------------------- checkpoints (MODEL.WEIGHTS)
    _C.MODEL.EVAD.CHECKPOINT = CN()
    # Skip (and log) checkpoint tensors whose shape differs from the model's instead of failing.
    _C.MODEL.EVAD.CHECKPOINT.SKIP_SHAPE_MISMATCH = False
    # From a VideoMAE pretraining checkpoint, also load its decoder blocks and encoder_to_decoder
    # into the action decoder where shapes match (what the official EVAD loader does).
    _C.MODEL.EVAD.CHECKPOINT.VIDEOMAE_DECODER_INIT = False
    # Fine-tune on other classes: the checkpoint's action classifiers (every *.action_logits.* tensor,
    # sized by its NUM_ACTION_CLASSES) are not loaded and keep their initialisation; every other
    # tensor loads, and the load's log lists the re-initialised ones.
    _C.MODEL.EVAD.CHECKPOINT.NEW_ACTION_CLASSES = False

    # ---------------------------------------------------------------- losses (WOO / appendix B)
    _C.MODEL.EVAD.LOSS = CN()
    # Weights of person/background CE, box L1, GIoU and action BCE.
    _C.MODEL.EVAD.LOSS.CLASS_WEIGHT = 2.0
    _C.MODEL.EVAD.LOSS.L1_WEIGHT = 5.0
    _C.MODEL.EVAD.LOSS.GIOU_WEIGHT = 2.0
    _C.MODEL.EVAD.LOSS.ACTION_WEIGHT = 12.0
    # Relative weight of the no-object class in the person/background CE.
    _C.MODEL.EVAD.LOSS.NO_OBJECT_WEIGHT = 0.1
    # Supervise every localization stage and every decoder layer, not only the last.
    _C.MODEL.EVAD.LOSS.DEEP_SUPERVISION = True

    # ---------------------------------------------------------------- solver (appendix B)
    # "ADAMW" (the paper) or "SGD".
    _C.SOLVER.OPTIMIZER = "ADAMW"
    _C.SOLVER.BASE_LR = 2.5e-5
    # SOLVER.WEIGHT_DECAY 1e-4 and IMS_PER_BATCH 16 (8 GPUs x 2 clips) are detectron2's defaults.
    # Schedule in epochs, converted to iterations from the training set size (0 = use MAX_ITER/STEPS).
    _C.SOLVER.MAX_EPOCHS = 12
    _C.SOLVER.STEP_EPOCHS = (5, 8)
    _C.SOLVER.WARMUP_EPOCHS = 2.0
    # Warm-up starts at BASE_LR * WARMUP_FACTOR (2.5e-6 / 2.5e-5).
    _C.SOLVER.WARMUP_FACTOR = 0.1
    # Layer-wise lr decay of the ViT blocks (1.0 = off) and a multiplier for the whole backbone.
    _C.SOLVER.LAYER_DECAY = 1.0
    _C.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE also accepts "full_model": clip the norm of all gradients together.
    # Autocast dtype when SOLVER.AMP.ENABLED (CUDA): "float16" (with a grad scaler) or "bfloat16".
    _C.SOLVER.AMP.PRECISION = "float16"

    # ---------------------------------------------------------------- evaluation protocols
    # AVA frame-mAP: "pyslowfast" (PySlowFast's ava_eval_helper, where EVAD's numbers come from)
    # or "activitynet" (get_ava_performance.py); what differs: evad_d2.evaluation.ava.PROTOCOL_TABLE.
    _C.TEST.AVA_PROTOCOL = AVA_DEFAULT_PROTOCOL
    # UCF101-24 / JHMDB frame- and video-mAP: "act" (the ACT code behind published numbers) or "voc".
    _C.TEST.UCF_JHMDB_PROTOCOL = UCF_JHMDB_DEFAULT_PROTOCOL
    # EVADPredictor (demo, benchmark): torch.compile the backbone and heads (evad_d2.engine.compilation).
    # Off: equal results, but each new clip size / keep rate first compiles for minutes on a CPU.
    _C.TEST.COMPILE = False


def get_evad_cfg(config_file=None, opts=(), freeze: bool = True):
    """detectron2's defaults plus EVAD's keys, merged from a YAML file and ``KEY VALUE`` overrides.

    Every value is checked (``check_evad_cfg``): a ConfigValueError names the file, the key, the
    value and the allowed range.
    """
    cfg = add_evad_config(get_cfg())
    if config_file:
        # detectron2 defaults to allow_unsafe=True: yaml.unsafe_load, where a tag such as
        # !!python/object/apply:os.system runs a command. A config file is data.
        cfg.merge_from_file(config_file, allow_unsafe=False)
    if opts:
        cfg.merge_from_list(list(opts))
    try:
        check_evad_cfg(cfg)
    except ConfigValueError as e:
        source = (config_file or "the default config") + (f" with overrides {list(opts)}" if opts else "")
        raise ConfigValueError(f"{source}: {e}") from None
    if freeze:
        cfg.freeze()
    return cfg
