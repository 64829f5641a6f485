"""train_net (evad_d2.engine.trainer) end to end on the CPU: real iterations, exact resume, and --eval-only."""
import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from detectron2.utils.events import EventStorage

from evad_d2 import get_evad_cfg
from evad_d2.data.synthetic import GeneratorSettings, generate
from evad_d2.engine import trainer as trainer_module
from evad_d2.engine.trainer import EVADTrainer, cpu_threads_for, setup, train_and_evaluate
from evad_d2.testing import REPO_ROOT as ROOT, TINY_CONFIG as TINY, generate_dataset, run_training, train_args


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ava_like"), "trainnet_test")


def test_training_runs_and_writes_checkpoints_and_metrics(dataset, tmp_path):
    trainer, losses = run_training(train_args(dataset, tmp_path))
    assert sorted(losses) == list(range(6))
    assert all(math.isfinite(v) for v in losses.values())
    assert os.path.exists(tmp_path / "model_final.pth") and os.path.exists(tmp_path / "model_0000002.pth")
    lines = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert any("loss_action" in line for line in lines)
    results = trainer._last_eval_results
    assert "frame_mAP@0.5" in results["ava"]
    # evad_d2's own messages reach OUTPUT_DIR/log.txt, the evaluator's summary included.
    log = (tmp_path / "log.txt").read_text()
    assert f"AVA '{dataset['val']}': frame-mAP@0.5 = " in log


def test_evad_d2_log_lines_and_the_resolved_config_land_in_the_output_dir(dataset, tmp_path):
    args = train_args(dataset, tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.STEP_EPOCHS", "(1,)", "SOLVER.WARMUP_EPOCHS", "0.5")
    trainer = EVADTrainer(setup(args))
    n = len(trainer._train_dataset)
    per_epoch = math.ceil(n / 2)
    log = (tmp_path / "log.txt").read_text()
    assert "CPU training with 1 intra-op threads per process" in log  # conftest: 1 thread
    assert f"schedule: {n} samples, {per_epoch} iterations/epoch -> MAX_ITER {2 * per_epoch}" in log
    assert "ClipDatasetMapper(is_train=True): 8x2 frames, keyframe at 4" in log
    # Any evad_d2 module's logger goes there (e.g. the mapper's skipped-sample warnings).
    logging.getLogger("evad_d2.data.clip_mapper").warning("Skipping sample vid@902 (test line)")
    assert "Skipping sample vid@902 (test line)" in (tmp_path / "log.txt").read_text()
    # config.yaml is the config that runs: the schedule resolved from epochs, not MAX_ITER 6.
    saved = get_evad_cfg(str(tmp_path / "config.yaml"))
    assert saved.SOLVER.MAX_ITER == trainer.max_iter == 2 * per_epoch
    assert tuple(saved.SOLVER.STEPS) == (per_epoch,) and saved.SOLVER.WARMUP_ITERS == round(0.5 * per_epoch)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # written atomically, no leftovers


def test_resume_continues_exactly(dataset, tmp_path):
    _, straight = run_training(train_args(dataset, tmp_path / "straight"))
    _, partial = run_training(train_args(dataset, tmp_path / "split"), stop_after=3)
    assert sorted(partial) == [0, 1, 2, 3]
    with open(tmp_path / "split" / "last_checkpoint") as f:
        assert f.read().strip() == "model_0000002.pth"
    resumed, rest = run_training(train_args(dataset, tmp_path / "split", resume=True))
    assert resumed.start_iter == 3
    assert sorted(rest) == [3, 4, 5]
    for it in range(3):
        assert partial[it] == pytest.approx(straight[it], rel=1e-6)
    for it in (3, 4, 5):
        assert rest[it] == pytest.approx(straight[it], rel=1e-5, abs=1e-6), it
    # Optimizer and scheduler states continued too: final weights, iteration and lr agree.
    straight_ckpt = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=False)
    resumed_ckpt = torch.load(tmp_path / "split" / "model_final.pth", weights_only=False)
    assert straight_ckpt["iteration"] == resumed_ckpt["iteration"] == 5
    sched = [c["trainer"]["hooks"]["LRScheduler"] for c in (straight_ckpt, resumed_ckpt)]
    assert sched[0] == sched[1] and sched[0]["last_epoch"] == 6
    opt = [c["trainer"]["_trainer"]["optimizer"]["state"] for c in (straight_ckpt, resumed_ckpt)]
    for key in opt[0]:
        torch.testing.assert_close(opt[1][key]["exp_avg"], opt[0][key]["exp_avg"], rtol=1e-4, atol=1e-6)
    for k, v in straight_ckpt["model"].items():
        torch.testing.assert_close(resumed_ckpt["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_eval_only_reproduces_end_of_training_metrics(dataset, tmp_path):
    trainer, _ = run_training(train_args(dataset, tmp_path))
    end_of_training = trainer._last_eval_results
    args = train_args(dataset, tmp_path / "eval", "MODEL.WEIGHTS", str(tmp_path / "model_final.pth"), eval_only=True)
    with EventStorage():
        results = train_and_evaluate(args)
    assert results["ava"]["frame_mAP@0.5"] == pytest.approx(end_of_training["ava"]["frame_mAP@0.5"], abs=1e-9)
    assert os.path.exists(tmp_path / "eval" / "inference" / dataset["val"] / "ava_detections.csv")


def test_epoch_schedule_comes_from_the_sampled_training_list(dataset, tmp_path):
    args = train_args(dataset, tmp_path, "SOLVER.MAX_EPOCHS", "2", "SOLVER.STEP_EPOCHS", "(1,)", "SOLVER.WARMUP_EPOCHS", "0.5")
    trainer = EVADTrainer(setup(args))
    per_epoch = math.ceil(len(trainer._train_dataset) / 2)  # IMS_PER_BATCH 2
    assert trainer.max_iter == trainer.cfg.SOLVER.MAX_ITER == 2 * per_epoch
    assert trainer.cfg.SOLVER.STEPS == (per_epoch,) and trainer.cfg.SOLVER.WARMUP_ITERS == round(0.5 * per_epoch)


def test_cpu_threads_are_each_process_share_of_the_cores(monkeypatch):
    cfg = get_evad_cfg(TINY, ["DATALOADER.NUM_WORKERS", "1"])
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cpu_threads_for(cfg) == 15  # one process: the cores its worker leaves
    monkeypatch.setattr(trainer_module.comm, "get_local_size", lambda: 4)
    assert cpu_threads_for(cfg) == 3  # 4 processes: 16 / 4 cores each, less 1 worker
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert cpu_threads_for(cfg) == 1  # at least one


def test_amp_on_the_cpu_is_refused_before_anything_loads(tmp_path):
    args = train_args({"train": "no_such_dataset", "val": "no_such_dataset"}, tmp_path, "SOLVER.AMP.ENABLED", "True")
    # The dataset is not even registered: the AMP check comes first.
    with pytest.raises(ValueError, match="SOLVER.AMP.ENABLED needs a CUDA device, but MODEL.DEVICE is 'cpu'"):
        EVADTrainer(setup(args))


@pytest.mark.parametrize("protocol", ["pyslowfast", "activitynet"])
def test_trainer_builds_the_ava_evaluator_with_the_configured_protocol(dataset, protocol):
    cfg = get_evad_cfg(TINY, ["TEST.AVA_PROTOCOL", protocol])
    evaluator = EVADTrainer.build_evaluator(cfg, dataset["val"], output_folder=None)
    assert evaluator.protocol == protocol


@pytest.mark.slow
def test_train_net_command_line_trains_and_evaluates(tmp_path):
    # The builtin ava_like_* names read $EVAD_DATASETS/generated/ava_like.
    root = tmp_path / "datasets" / "generated" / "ava_like"
    generate(str(root), GeneratorSettings(seed=3, num_train_videos=2, num_val_videos=1, duration=5), log=lambda *a: None)
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", TINY, "DATASETS.TRAIN", "('ava_like_train',)",
         "DATASETS.TEST", "('ava_like_val',)", "SOLVER.MAX_EPOCHS", "0", "SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()",
         "SOLVER.WARMUP_ITERS", "0", "SOLVER.IMS_PER_BATCH", "1", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "EVAD_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    assert "frame-mAP@0.5" in (out / "log.txt").read_text()
