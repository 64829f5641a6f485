"""The CUDA paths, skipped without a GPU: the model on the GPU against the CPU, AMP training
steps and train_net with SOLVER.AMP, the benchmark's event timing and CUDA memory, the predictor
and the demo in bf16/fp16 with keyframe batches.

On a machine with a GPU, ``make test`` runs these with the rest; ``pytest -m cuda tests`` runs
only these.
"""
import json

import numpy as np
import pytest
import torch

from evad_d2.engine import autocast_for
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.testing import (
    TINY_CONFIG as TINY,
    build_tiny_model,
    decode_video,
    generate_dataset,
    random_clip,
    run_training,
    tiny_cfg,
    tool_output,
    train_args,
    training_input,
    write_video,
)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture
def exact_fp32():
    """Full-precision float32 on the GPU (cuDNN otherwise uses TF32 for the patch-embedding conv)."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def test_model_on_cuda_matches_cpu(exact_fp32):
    model = build_tiny_model("MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0").eval()
    inputs = [{"clip": random_clip(seed=s), "height": 120, "width": 180} for s in range(2)]
    with torch.no_grad():
        ref = [o["instances"] for o in model(inputs)]
        clip = model.preprocess_clips(inputs).tensor
        ref_index = model.backbone.net(clip)["token_index"]
        model.cuda()
        assert model.device.type == "cuda"
        out = [o["instances"].to("cpu") for o in model(inputs)]  # CPU inputs: the model moves them
        # The pruning layers score tokens with the recompute kernel here, logsumexp on the CPU.
        index = model.backbone.net(clip.cuda())["token_index"].cpu()
    assert torch.equal(index, ref_index)
    for a, b in zip(out, ref):
        assert len(a) == len(b) == 8
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-2, rtol=1e-4)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.pred_action_scores, b.pred_action_scores, atol=1e-4, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_step_on_cuda(precision, exact_fp32):
    batch = [training_input(num_persons=2, seed=s) for s in range(2)]
    ref = {k: v.detach() for k, v in build_tiny_model().train()(batch).items()}
    model = build_tiny_model().cuda().train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    for _ in range(20):
        optimizer.zero_grad()
        with autocast_for("cuda", precision):
            losses = model(batch)
        loss = sum(losses.values())
        if scaler is None:
            loss.backward()
            optimizer.step()
            break
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # GradScaler skips the step (and halves its scale) while scaled fp16 gradients overflow.
        if scaler.get_scale() >= scale:
            break
    rel = 1e-4 if precision == "fp32" else 5e-2
    for k, v in losses.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), k
        assert float(v.detach()) == pytest.approx(float(ref[k]), rel=rel, abs=1e-3), k
    # Every parameter with a gradient moved (some FPN levels get none from the tiny boxes).
    moved = [not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before) if p.grad is not None and p.grad.any()]
    assert moved and all(moved)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # Names of its own: tests/engine/test_trainer.py's fixture registers "trainnet_test_*" in the same process.
    return generate_dataset(tmp_path_factory.mktemp("ava_like"), "cuda_test")


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_train_net_with_amp_on_cuda(dataset, tmp_path, precision):
    from detectron2.engine import AMPTrainer

    args = train_args(dataset, tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", precision)
    trainer, losses = run_training(args)
    assert isinstance(trainer._trainer, AMPTrainer)
    assert trainer._trainer.precision == getattr(torch, precision)
    assert sorted(losses) == list(range(6)) and all(np.isfinite(list(losses.values())))
    assert (tmp_path / "model_final.pth").exists()
    assert "frame_mAP@0.5" in trainer._last_eval_results["ava"]


def test_benchmark_on_cuda(tmp_path):
    name = torch.cuda.get_device_name()
    out = tmp_path / "infer.json"
    tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--part", "model", "--device", "cuda", "--dtype", "bf16",
        "--keep-rates", "1.0", "0.5", "--input-size", "8", "64", "64", "--repeats", "3", "--json", str(out),
    )
    rows = json.loads(out.read_text())
    assert [r["keep_rate"] for r in rows] == [1.0, 0.5] and [r["tokens"] for r in rows] == [64, 16]
    for r in rows:
        assert r["device"] == name and r["dtype"] == "bf16"
        assert len(r["model_latency_all_ms"]) == 3 and all(x > 0 for x in r["model_latency_all_ms"])
    out = tmp_path / "train.json"
    tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--part", "model", "--mode", "train", "--device", "cuda",
        "--dtype", "fp16", "--keep-rates", "1.0", "0.5", "--input-size", "8", "64", "64", "--repeats", "2",
        "--json", str(out),
    )
    rows = json.loads(out.read_text())
    for r in rows:
        assert r["memory_method"] == "torch.cuda.max_memory_allocated"
        assert r["memory_before_step_mb"] > 0 and r["step_memory_mb"] > 0
        assert r["peak_memory_mb"] == pytest.approx(r["memory_before_step_mb"] + r["step_memory_mb"])
    # Fewer tokens: less activation memory in the step.
    assert rows[1]["step_memory_mb"] < rows[0]["step_memory_mb"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_predictor_on_cuda_matches_cpu(precision, exact_fp32):
    torch.manual_seed(0)
    cpu = EVADPredictor(tiny_cfg(keep_all_proposals=True))
    gpu = EVADPredictor(tiny_cfg("MODEL.DEVICE", "cuda", keep_all_proposals=True), precision=precision)
    gpu.model.load_state_dict(cpu.model.state_dict())
    clip = np.random.default_rng(0).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    ref, out = cpu(clip), gpu(clip)
    assert len(out) == len(ref) > 0
    box_px, prob = (1e-2, 1e-4) if precision == "fp32" else (2.0, 0.03)
    for a in out:
        b = min(ref, key=lambda r: np.abs(np.subtract(r["box"], a["box"])).max())
        np.testing.assert_allclose(a["box"], b["box"], atol=box_px)
        np.testing.assert_allclose(a["action_scores"], b["action_scores"], atol=prob)


def test_demo_on_cuda_in_fp16_with_batches(tmp_path):
    from evad_d2.demo import VideoDemo, build_demo_predictor

    video, out, js = tmp_path / "in.mp4", tmp_path / "out.mp4", tmp_path / "out.json"
    rng = np.random.default_rng(0)
    write_video(video, [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(45)])
    # As tools/demo.py --precision fp16 --batch-size 2 MODEL.DEVICE cuda runs it.
    predictor = build_demo_predictor(
        TINY, ["MODEL.DEVICE", "cuda", "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0"], precision="fp16"
    )
    stats = VideoDemo(predictor, batch_size=2).run(str(video), str(out), json_path=str(js), show_progress=False)
    assert stats["num_frames"] == 45
    result = json.loads(js.read_text())
    assert len(result["keyframes"]) == 2 and all(k["actors"] for k in result["keyframes"])
    assert len(decode_video(out)) == 45
