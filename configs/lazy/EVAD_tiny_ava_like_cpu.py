# The quick-start model as a detectron2 LazyConfig: a small EVAD (same architecture, smaller widths)
# trained from scratch on the generated AVA-format dataset (datasets/generated/ava_like) on the CPU.
# The same model and run as configs/quickstart/EVAD_tiny_ava_like_cpu.yaml
# (tests/engine/test_lazy_config.py checks every value against it).
#   python train_net.py --config-file configs/lazy/EVAD_tiny_ava_like_cpu.py
#   python train_net.py --config-file configs/lazy/EVAD_tiny_ava_like_cpu.py --eval-only train.init_checkpoint=output/quickstart_lazy/model_final.pth
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data import transforms as T
from omegaconf import OmegaConf

from evad_d2.data.clip_mapper import ClipDatasetMapper
from evad_d2.engine.lazy import dataset_action_ids, multistep_lr_multiplier
from evad_d2.engine.optimizer import build_param_groups, make_optimizer
from evad_d2.evaluation import AVAEvaluator
from evad_d2.modeling.backbone import PruningVideoViT
from evad_d2.modeling.backbone.simple_fpn import ViTSimpleFPN
from evad_d2.modeling.heads import ContextRefinementHead, LocalizationHead
from evad_d2.modeling.losses import SetCriterion
from evad_d2.modeling.meta_arch import EVAD
from evad_d2.modeling.poolers import ROIPooler3D

NUM_FRAMES = 8
SAMPLING_RATE = 4
KEYFRAME_INDEX = -1  # the middle frame
NUM_CLASSES = 6
TRAIN_SET, TEST_SET = "ava_like_train", "ava_like_val"

# ---------------------------------------------------------------- model
model = L(EVAD)(
    backbone=L(ViTSimpleFPN)(
        net=L(PruningVideoViT)(
            in_chans=3,
            embed_dim=128,
            depth=6,
            num_heads=4,
            mlp_ratio=4.0,
            qkv_bias=True,
            patch_size=16,
            tubelet_size=2,
            drop_path_rate=0.0,  # no stochastic depth in this small model
            learnable_pos_embed=False,
            pretrain_img_size=128,
            pretrain_num_frames=NUM_FRAMES,
            # rho = 0.7 at the 3rd and 5th blocks (the paper's pattern: first pruning at 1/3 of the depth).
            keep_rates=[1.0, 1.0, 0.7, 1.0, 0.7, 1.0],
            keyframe_weight=1.0,
            keyframe_frame=KEYFRAME_INDEX,
            feature_layers=[1, 2, 4, 5],
            use_checkpoint=False,
            importance_impl="auto",
            pruning_score="attention",
        ),
        in_features=["layer1", "layer2", "layer4", "layer5"],
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        out_channels=64,
        norm="",
        top_block=True,
    ),
    localization_head=L(LocalizationHead)(
        in_channels="${..backbone.out_channels}",
        feature_strides={"p2": 4, "p3": 8, "p4": 16, "p5": 32},
        in_features=["p2", "p3", "p4", "p5"],
        # A 6x6 grid of proposals: from scratch, box refinement learns slowly, and a denser grid
        # starts every actor near a proposal.
        num_proposals=36,
        hidden_dim=64,
        num_stages=2,
        num_heads=4,
        dim_feedforward=256,
        dim_dynamic=16,
        num_dynamic=2,
        dropout=0.0,
        pooler_resolution=7,
        # One sample per RoIAlign bin (2 in the paper): the CPU RoIAlign backward is the largest cost.
        sampling_ratio=1,
        bbox_weights=(2.0, 2.0, 1.0, 1.0),
        proposal_init="grid",
        zero_init_box_deltas=True,
    ),
    action_head=L(ContextRefinementHead)(
        in_dim="${..backbone.net.embed_dim}",
        dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        num_classes=NUM_CLASSES,
        pooler=L(ROIPooler3D)(output_size=7, stride="${...backbone.net.patch_size}", sampling_ratio=1, roi_extend=(0.4, 0.2)),
        cls_hidden_dim=128,
        drop_path_rate=0.0,
        official_token_order=False,
        pretrain_token_grid=(8, 8),  # pretrain_img_size / patch_size
    ),
    criterion=L(SetCriterion)(
        class_weight=2.0, l1_weight=5.0, giou_weight=2.0, action_weight=12.0, no_object_weight=0.1, deep_supervision=True
    ),
    pixel_mean=[114.75, 114.75, 114.75],
    pixel_std=[57.375, 57.375, 57.375],
    score_thresh=0.7,
    keep_all_if_none=False,
    official_mode=False,
)

# ---------------------------------------------------------------- data
dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    # The trainer loads the dataset dicts, wraps the mapper in RetryMapDataset and gives the loader
    # a resumable sampler.
    dataset=L(get_detection_dataset_dicts)(names=(TRAIN_SET,), filter_empty=True),
    mapper=L(ClipDatasetMapper)(
        is_train=True,
        # No flip: it would turn "walk left" into "walk right" without changing the label.
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=(112, 120, 128), max_size=192, sample_style="choice")],
        num_frames=NUM_FRAMES,
        sampling_rate=SAMPLING_RATE,
        keyframe_index=KEYFRAME_INDEX,
        action_ids=L(dataset_action_ids)(dataset_name=TRAIN_SET),
        color_jitter=0.0,
        skip_bad_samples=False,
        interpolation="bilinear",
    ),
    total_batch_size=8,
    aspect_ratio_grouping=True,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names=(TEST_SET,), filter_empty=False),
    mapper=L(ClipDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=120, max_size=192, sample_style="choice")],
        num_frames=NUM_FRAMES,
        sampling_rate=SAMPLING_RATE,
        keyframe_index=KEYFRAME_INDEX,
        action_ids=L(dataset_action_ids)(dataset_name=TEST_SET),
        interpolation="bilinear",
    ),
    num_workers=1,
)
# output_dir None: {train.output_dir}/inference/<test set>.
dataloader.evaluator = L(AVAEvaluator)(dataset_name=TEST_SET, output_dir=None, protocol="pyslowfast")

# ---------------------------------------------------------------- optimizer and schedule
optimizer = L(make_optimizer)(
    params=L(build_param_groups)(model=None, base_lr=1e-3, weight_decay=1e-4, layer_decay=1.0, backbone_multiplier=1.0),
    name="ADAMW",
    lr="${.params.base_lr}",  # the default of groups without their own lr (they all have one)
    momentum=0.9,
    nesterov=False,
    clip_type="full_model",  # clip the norm of all gradients together
    clip_value=1.0,
    norm_type=2.0,
)
# About 600 iterations of 8 clips: 6 epochs, lr x0.1 after epochs 4 and 5.2, half an epoch of warm-up.
lr_multiplier = L(multistep_lr_multiplier)(
    steps=(4.0, 5.2), warmup=0.5, gamma=0.1, warmup_factor=0.1, warmup_method="linear", rescale_interval=False
)

# ---------------------------------------------------------------- run
train = dict(
    output_dir="output/quickstart_lazy",
    init_checkpoint="",  # from scratch
    device="cpu",
    # A fixed seed (initial weights, sampling order, augmentation): reproducible on a given machine.
    seed=0,
    max_epochs=6,
    max_iter=None,
    amp=dict(enabled=False, precision="float16"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False),
    checkpointer=dict(
        period=100000, max_to_keep=None, skip_shape_mismatch=False, videomae_decoder_init=False, new_action_classes=False
    ),
    eval_period=0,
    log_period=20,
    cudnn_benchmark=False,
)
