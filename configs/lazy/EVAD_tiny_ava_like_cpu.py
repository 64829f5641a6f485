# The quick-start model as a detectron2 LazyConfig: a small EVAD (the paper's architecture of
# configs/lazy/common/evad.py, smaller widths, 8 frames, 6 classes) trained from scratch on the
# generated AVA-format dataset (datasets/generated/ava_like) on the CPU. Below: only what differs
# from the paper's config. The same model and run as configs/quickstart/EVAD_tiny_ava_like_cpu.yaml
# (tests/engine/test_lazy_config.py checks every value against it).
#   python train_net.py --config-file configs/lazy/EVAD_tiny_ava_like_cpu.py
#   python train_net.py --config-file configs/lazy/EVAD_tiny_ava_like_cpu.py --eval-only train.init_checkpoint=output/quickstart_lazy/model_final.pth
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T

from .common.evad import dataloader, lr_multiplier, model, optimizer, train, use_datasets

NUM_FRAMES = 8
NUM_CLASSES = 6
TRAIN_SET, TEST_SET = "ava_like_train", "ava_like_val"

# ---------------------------------------------------------------- model
model.backbone.net.embed_dim = 128
model.backbone.net.depth = 6
model.backbone.net.num_heads = 4
model.backbone.net.drop_path_rate = 0.0  # no stochastic depth in this small model
model.backbone.net.pretrain_img_size = 128
model.backbone.net.pretrain_num_frames = NUM_FRAMES
# rho = 0.7 at the 3rd and 5th blocks (the paper's pattern: first pruning at 1/3 of the depth).
model.backbone.net.keep_rates = [1.0, 1.0, 0.7, 1.0, 0.7, 1.0]
model.backbone.net.feature_layers = [1, 2, 4, 5]
model.backbone.in_features = ["layer1", "layer2", "layer4", "layer5"]
model.backbone.out_channels = 64

# A 6x6 grid of proposals: from scratch, box refinement learns slowly, and a denser grid starts
# every actor near a proposal.
model.localization_head.num_proposals = 36
model.localization_head.proposal_init = "grid"
model.localization_head.zero_init_box_deltas = True
model.localization_head.hidden_dim = 64
model.localization_head.num_stages = 2
model.localization_head.num_heads = 4
model.localization_head.dim_feedforward = 256
model.localization_head.dim_dynamic = 16
# One sample per RoIAlign bin (2 in the paper): the CPU RoIAlign backward is the largest cost.
model.localization_head.sampling_ratio = 1

model.action_head.dim = 64
model.action_head.depth = 2
model.action_head.num_heads = 4
model.action_head.num_classes = NUM_CLASSES
model.action_head.pooler.sampling_ratio = 1
model.action_head.cls_hidden_dim = 128
model.action_head.drop_path_rate = 0.0
model.action_head.pretrain_token_grid = (8, 8)  # pretrain_img_size / patch_size

# ---------------------------------------------------------------- data
use_datasets(dataloader, TRAIN_SET, TEST_SET)
# No flip: it would turn "walk left" into "walk right" without changing the label.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(112, 120, 128), max_size=192, sample_style="choice")
]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=120, max_size=192, sample_style="choice")]
dataloader.train.mapper.num_frames = dataloader.test.mapper.num_frames = NUM_FRAMES
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = dataloader.test.num_workers = 1

# ---------------------------------------------------------------- optimizer and schedule
optimizer.params.base_lr = 1e-3
optimizer.clip_type = "full_model"  # clip the norm of all gradients together
# About 600 iterations of 8 clips: 6 epochs, lr x0.1 after epochs 4 and 5.2, half an epoch of warm-up.
lr_multiplier.steps = (4.0, 5.2)
lr_multiplier.warmup = 0.5

# ---------------------------------------------------------------- run
train.output_dir = "output/quickstart_lazy"
train.init_checkpoint = ""  # from scratch
train.device = "cpu"
# A fixed seed (initial weights, sampling order, augmentation): reproducible on a given machine.
train.seed = 0
train.max_epochs = 6
train.checkpointer.period = 100000
