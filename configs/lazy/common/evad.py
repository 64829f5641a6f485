# The paper's EVAD (Tables 2-3; appendix A/B settings): ViT-B (VideoMAE, Kinetics-400) with keep rate
# 0.7 at the 4th/7th/10th blocks, short side 224, trained with AdamW for 12 epochs. The leaf configs
# in configs/lazy/ import model, dataloader, optimizer, lr_multiplier and train from here and change
# what differs (as detectron2's configs/common/ does). A leaf names its datasets with
# use_datasets(dataloader, TRAIN_SET, TEST_SET) and sets train.output_dir.
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

NUM_FRAMES = 16  # T; the ViT's position table is defined on 16 frames too
SAMPLING_RATE = 4  # tau
KEYFRAME_INDEX = -1  # the middle frame
NUM_CLASSES = 80
DATASET = "???"  # OmegaConf's "missing": a leaf's use_datasets sets every dataset name

# ---------------------------------------------------------------- model (paper 3, appendix A)
model = L(EVAD)(
    backbone=L(ViTSimpleFPN)(
        net=L(PruningVideoViT)(
            in_chans=3,
            embed_dim=768,
            depth=12,
            num_heads=12,
            mlp_ratio=4.0,
            qkv_bias=True,
            patch_size=16,
            tubelet_size=2,
            drop_path_rate=0.1,
            learnable_pos_embed=False,
            pretrain_img_size=224,
            pretrain_num_frames=NUM_FRAMES,
            # rho = 0.7 at blocks 4, 7 and 10 (1-based): 0.7^3 = 34% of the non-keyframe tokens remain.
            keep_rates=[1.0, 1.0, 1.0, 0.7, 1.0, 1.0, 0.7, 1.0, 1.0, 0.7, 1.0, 1.0],
            keyframe_weight=1.0,
            keyframe_frame=KEYFRAME_INDEX,
            feature_layers=[2, 5, 8, 11],
            use_checkpoint=False,
            importance_impl="auto",
            pruning_score="attention",
        ),
        in_features=["layer2", "layer5", "layer8", "layer11"],
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        out_channels=256,
        norm="",
        top_block=True,
    ),
    localization_head=L(LocalizationHead)(
        in_channels="${..backbone.out_channels}",
        feature_strides={"p2": 4, "p3": 8, "p4": 16, "p5": 32},
        in_features=["p2", "p3", "p4", "p5"],
        num_proposals=100,
        hidden_dim=256,
        num_stages=6,
        num_heads=8,
        dim_feedforward=2048,
        dim_dynamic=64,
        num_dynamic=2,
        dropout=0.0,
        pooler_resolution=7,
        sampling_ratio=2,
        bbox_weights=(2.0, 2.0, 1.0, 1.0),
        proposal_init="image",
        zero_init_box_deltas=False,
    ),
    action_head=L(ContextRefinementHead)(
        in_dim="${..backbone.net.embed_dim}",
        dim=384,
        depth=6,
        num_heads=6,
        mlp_ratio=4.0,
        num_classes=NUM_CLASSES,
        pooler=L(ROIPooler3D)(output_size=7, stride="${...backbone.net.patch_size}", sampling_ratio=2, roi_extend=(0.4, 0.2)),
        cls_hidden_dim=2048,
        drop_path_rate=0.1,
        official_token_order=False,
        pretrain_token_grid=(14, 14),
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
    # The trainer loads the dataset dicts (dropping bad videos' keyframes with skip_bad_samples),
    # wraps the mapper in RetryMapDataset and gives the loader a resumable sampler.
    dataset=L(get_detection_dataset_dicts)(names=(DATASET,), filter_empty=True),
    mapper=L(ClipDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(224,), max_size=1333, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True, vertical=False),
        ],
        num_frames=NUM_FRAMES,
        sampling_rate=SAMPLING_RATE,
        keyframe_index=KEYFRAME_INDEX,
        action_ids=L(dataset_action_ids)(dataset_name=DATASET),
        color_jitter=0.0,
        skip_bad_samples=False,
        interpolation="bilinear",
    ),
    total_batch_size=16,  # 8 GPUs x 2 clips
    aspect_ratio_grouping=True,
    num_workers=8,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names=(DATASET,), filter_empty=False),
    mapper=L(ClipDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=224, max_size=1333, sample_style="choice")],
        num_frames=NUM_FRAMES,
        sampling_rate=SAMPLING_RATE,
        keyframe_index=KEYFRAME_INDEX,
        action_ids=L(dataset_action_ids)(dataset_name=DATASET),
        interpolation="bilinear",
    ),
    num_workers=8,
)
# output_dir None: {train.output_dir}/inference/<test set>.
dataloader.evaluator = L(AVAEvaluator)(dataset_name=DATASET, output_dir=None, protocol="pyslowfast")

# ---------------------------------------------------------------- optimizer and schedule (appendix B)
optimizer = L(make_optimizer)(
    # Layer-wise lr decay of the ViT blocks (1.0 = off, the paper) and a backbone lr multiplier;
    # the trainer sets params.model.
    params=L(build_param_groups)(model=None, base_lr=2.5e-5, weight_decay=1e-4, layer_decay=1.0, backbone_multiplier=1.0),
    name="ADAMW",
    lr="${.params.base_lr}",  # the default of groups without their own lr (they all have one)
    momentum=0.9,
    nesterov=False,
    clip_type=None,  # "value" / "norm" (per parameter) or "full_model"
    clip_value=1.0,
    norm_type=2.0,
)
# 12 epochs, lr x0.1 after epochs 5 and 8, 2 warm-up epochs from 0.1 x lr. The trainer sets max_iter
# and iters_per_epoch (from train.max_epochs and the training set size).
lr_multiplier = L(multistep_lr_multiplier)(
    steps=(5, 8), warmup=2.0, gamma=0.1, warmup_factor=0.1, warmup_method="linear", rescale_interval=False
)

# ---------------------------------------------------------------- run
train = dict(
    output_dir="???",  # set by the leaf
    # The VideoMAE ViT-B K400 fine-tuned checkpoint (VideoMAE's model zoo or Hugging Face).
    init_checkpoint="pretrained/videomae_vit_b_k400_finetune.pth",
    device="cuda",
    seed=-1,
    max_epochs=12,
    max_iter=None,
    amp=dict(enabled=False, precision="float16"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False),
    checkpointer=dict(
        period=5000, max_to_keep=None, skip_shape_mismatch=False, videomae_decoder_init=False, new_action_classes=False
    ),
    eval_period=0,
    log_period=20,
    cudnn_benchmark=False,
)


def use_datasets(dataloader, train_set, test_set):
    """Point the training loader, the test loader and the evaluator of ``dataloader`` at the
    registered datasets ``train_set`` and ``test_set`` (the loaders' action ids come from them)."""
    dataloader.train.dataset.names = (train_set,)
    dataloader.train.mapper.action_ids.dataset_name = train_set
    dataloader.test.dataset.names = (test_set,)
    dataloader.test.mapper.action_ids.dataset_name = test_set
    dataloader.evaluator.dataset_name = test_set
