"""Optimizer groups, epoch schedules, the resumable sampler and RNG checkpointing."""
import itertools
import random

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler

from evad_d2.engine import RNGState, ResumableTrainingSampler, build_optimizer, resolve_epoch_schedule
from evad_d2.modeling.backbone.vit import vit_layer_id
from evad_d2.testing import tiny_cfg


def test_layer_ids():
    assert vit_layer_id("patch_embed.proj.weight", 12) == 0
    assert vit_layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert vit_layer_id("blocks.11.mlp.fc2.bias", 12) == 12
    assert vit_layer_id("norm.weight", 12) == 13
    assert vit_layer_id("localization_head.stages.0.norm1.weight", 12) == 13


def test_param_groups_layer_decay_backbone_multiplier_and_no_decay():
    cfg = tiny_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.LAYER_DECAY = 0.5
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    lr_of, wd_of = {}, {}
    for g in opt.param_groups:
        for p in g["params"]:
            lr_of[id(p)], wd_of[id(p)] = g["lr"], g["weight_decay"]
    named = dict(model.named_parameters())
    assert len(lr_of) == len(named)  # every parameter is optimised exactly once
    depth = len(model.backbone.net.blocks)  # 4
    # block i: 0.1 * 0.5 ** (L + 1 - (i + 1)); patch embedding one power further down.
    assert lr_of[id(named["backbone.net.blocks.3.attn.qkv.weight"])] == pytest.approx(0.1 * 0.5**1)
    assert lr_of[id(named["backbone.net.blocks.0.attn.qkv.weight"])] == pytest.approx(0.1 * 0.5**depth)
    assert lr_of[id(named["backbone.net.patch_embed.proj.weight"])] == pytest.approx(0.1 * 0.5 ** (depth + 1))
    assert lr_of[id(named["backbone.net.norm.weight"])] == pytest.approx(0.1)
    assert lr_of[id(named["backbone.fpn_lateral2.weight"])] == pytest.approx(1.0)  # the neck is not the ViT
    assert wd_of[id(named["backbone.net.blocks.0.attn.qkv.weight"])] == 0.05
    assert wd_of[id(named["backbone.net.blocks.0.attn.q_bias"])] == 0.0
    assert wd_of[id(named["backbone.net.norm.weight"])] == 0.0
    assert isinstance(opt, torch.optim.AdamW)


def test_full_model_gradient_clipping_clips_the_global_norm():
    cfg = tiny_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    opt.step()
    total = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    assert total.item() == pytest.approx(0.5, rel=1e-4)


def test_bad_solver_values_name_the_key():
    cfg = tiny_cfg()
    model = build_model(cfg)
    cfg.SOLVER.LAYER_DECAY = 1.5
    with pytest.raises(ValueError, match="SOLVER.LAYER_DECAY"):
        build_optimizer(cfg, model)
    cfg.SOLVER.LAYER_DECAY = 1.0
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, model)


def test_epoch_schedule_matches_the_paper_recipe():
    cfg = tiny_cfg()  # 12 epochs, x0.1 at 5 and 8, warm-up 2 epochs from 0.1 * base lr
    cfg.SOLVER.IMS_PER_BATCH = 16
    ipe = resolve_epoch_schedule(cfg, 1000)  # ceil(1000 / 16) = 63 iterations per epoch
    assert ipe == 63
    assert cfg.SOLVER.MAX_ITER == 12 * 63 and cfg.SOLVER.STEPS == (5 * 63, 8 * 63) and cfg.SOLVER.WARMUP_ITERS == 2 * 63
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    base = cfg.SOLVER.BASE_LR
    assert lrs[0] == pytest.approx(2.5e-6)  # warm-up starts at 2.5e-6
    assert lrs[2 * 63] == pytest.approx(base)
    assert lrs[5 * 63 - 1] == pytest.approx(base) and lrs[5 * 63] == pytest.approx(base * 0.1)
    assert lrs[8 * 63] == pytest.approx(base * 0.01)


def test_epoch_schedule_errors():
    cfg = tiny_cfg()
    cfg.SOLVER.STEP_EPOCHS = (5, 13)
    with pytest.raises(ValueError, match="SOLVER.STEP_EPOCHS"):
        resolve_epoch_schedule(cfg, 100)
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="empty"):
        resolve_epoch_schedule(cfg, 0)
    cfg.SOLVER.MAX_EPOCHS = 0
    cfg.SOLVER.MAX_ITER = 77
    assert resolve_epoch_schedule(cfg, 0) is None and cfg.SOLVER.MAX_ITER == 77


def test_resumable_sampler_continues_the_stream():
    full = list(itertools.islice(iter(ResumableTrainingSampler(10, seed=3)), 25))
    resumed = ResumableTrainingSampler(10, seed=3, start=12)
    assert list(itertools.islice(iter(resumed), 13)) == full[12:]
    assert sorted(full[:10]) == list(range(10))  # one epoch is a permutation


def test_rng_state_round_trip_through_torch_save(tmp_path):
    state = RNGState()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    saved = state.state_dict()
    torch.save(saved, tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state.load_state_dict(torch.load(tmp_path / "rng.pth", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_ddp_of_a_cpu_model_gets_no_device_ids(monkeypatch):
    from evad_d2.engine import distributed

    calls = []
    monkeypatch.setattr(distributed.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed, "_d2_create_ddp_model", lambda model, **kw: calls.append(kw) or model)
    model = torch.nn.Linear(2, 2)
    assert distributed.create_ddp_model(model, broadcast_buffers=False) is model
    # detectron2 would add device_ids=[local rank], which DDP refuses for a CPU module.
    assert calls == [{"broadcast_buffers": False, "device_ids": None}]
    monkeypatch.setattr(distributed.comm, "get_world_size", lambda: 1)
    assert distributed.create_ddp_model(model) is model and len(calls) == 1  # one process: no DDP


def test_cpu_model_with_several_processes_needs_gloo(monkeypatch):
    from evad_d2.engine import distributed

    monkeypatch.setattr(distributed.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "nccl")
    with pytest.raises(RuntimeError, match=r"MODEL.DEVICE 'cpu' with 2 processes needs the gloo backend, .* \(CUDA_VISIBLE_DEVICES=\)"):
        distributed.check_backend_for_device("cpu")
    distributed.check_backend_for_device("cuda")  # NCCL is right for CUDA models
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "gloo")
    distributed.check_backend_for_device("cpu")


def test_rng_state_saved_right_after_a_multi_process_load_keeps_every_process_state(monkeypatch, caplog):
    """A resume at MAX_ITER redoes the final save with no gather in between: it must still hold
    each process's state, not only the main process's."""
    from detectron2.utils import comm

    torch.manual_seed(1)
    first = RNGState._local_state()
    torch.manual_seed(2)
    second = RNGState._local_state()
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_rank", lambda: 0)
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    rng = RNGState()
    rng.load_state_dict({**first, "ranks": [first, second]})
    with caplog.at_level("WARNING", logger="evad_d2"):
        saved = rng.state_dict()
    assert not caplog.records
    assert [torch.equal(s["torch"], r["torch"]) for s, r in zip(saved["ranks"], [first, second])] == [True, True]
    torch.rand(1)  # a draw after the load: the kept states are stale, so only the main one is saved
    assert "ranks" not in rng.state_dict()
