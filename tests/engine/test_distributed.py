"""train_net on 2 CPU processes (detectron2's launch, gloo): sharded training, exact resume, and an
--eval-only whose gathered predictions and metrics equal one process's.

One launch runs every 2-process step (starting processes is most of the cost on a small machine):
train 6 iterations (checkpoints at 2, 5 and final), "interrupt" it by resuming a copy of the run
from its iteration-2 checkpoint, train without deep supervision (parameters without gradients),
evaluate the final model with --eval-only, and run the UCF101-24/JHMDB evaluator on sharded
predictions. The tests then read the files and compare them with one process.
"""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import launch
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from evad_d2.engine.trainer import EVADTrainer, train_and_evaluate
from evad_d2.evaluation import UCFJHMDBEvaluator
from evad_d2.data.formats.ucf_jhmdb import load_gt_pickle
from evad_d2.testing import generate_dataset, register_dataset, small_ucf_gt, train_args, write_pickle

PREFIX = "dist_test"


def _two_process_session(data_root, out):
    """Runs in each of the 2 processes that launch starts (spawned: registrations are redone)."""
    torch.set_num_threads(1)  # as the test process (conftest): same kernels, same rounding
    names = register_dataset(data_root, PREFIX)
    straight, split = os.path.join(out, "straight"), os.path.join(out, "split")
    info = {"ddp": []}

    class Recording(EVADTrainer):
        def __init__(self, cfg):
            super().__init__(cfg)
            model = self._trainer.model
            info["ddp"].append((type(model).__name__, getattr(model, "device_ids", "absent")))

    train_and_evaluate(train_args(names, straight), Recording)
    if comm.is_main_process():
        # An interruption right after the iteration-2 checkpoint: the run's state at that point.
        os.makedirs(split)
        shutil.copy(os.path.join(straight, "model_0000002.pth"), split)
        with open(os.path.join(split, "last_checkpoint"), "w") as f:
            f.write("model_0000002.pth")
    comm.synchronize()
    train_and_evaluate(train_args(names, split, resume=True), Recording)
    # Without deep supervision the early stages' heads get no gradient: DDP must allow that.
    train_and_evaluate(train_args(names, os.path.join(out, "no_deep_supervision"), "MODEL.EVAD.LOSS.DEEP_SUPERVISION", "False",
                                 "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0"), Recording)
    final = os.path.join(straight, "model_final.pth")
    with EventStorage():
        train_and_evaluate(train_args(names, os.path.join(out, "eval2"), "MODEL.WEIGHTS", final, eval_only=True))
    with open(os.path.join(out, f"ddp_rank{comm.get_rank()}.json"), "w") as f:
        json.dump(info, f)
    _ucf_evaluation(os.path.join(data_root, "ucf_gt.pkl"), os.path.join(out, "ucf2"))


def _ucf_predictions(gt):
    """Noisy per-frame predictions for every frame of the test videos, in frame order."""
    rng = np.random.default_rng(0)
    pairs = []
    for v in gt["test_videos"][0]:
        label = 0 if v.startswith("run") else 1
        tube = gt["gttubes"][v][label][0]
        for t in range(1, gt["nframes"][v] + 1):
            row = tube[tube[:, 0] == t]
            boxes = np.concatenate([row[:, 1:5], rng.uniform(0, 40, (2, 4))]) + rng.normal(0, 2, (len(row) + 2, 4))
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
            scores = rng.uniform(0, 1, (len(boxes), 2))
            inst = Instances((60, 80), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                             scores=torch.tensor(rng.uniform(0.5, 1, len(boxes)), dtype=torch.float32),
                             pred_action_scores=torch.tensor(scores, dtype=torch.float32))
            pairs.append(({"video_id": v, "timestamp": t, "height": 60, "width": 80}, {"instances": inst}))
    return pairs


def _ucf_evaluation(gt_path, out):
    """UCFJHMDBEvaluator over the predictions: split in contiguous shards as detectron2's
    InferenceSampler splits a test set, the last process also predicting the first process's last
    frame again (a duplicate the gather must drop)."""
    name = "dist_test_ucf"
    MetadataCatalog.get(name).set(gt_file=gt_path, split="test", split_index=0, action_classes=["run", "jump"],
                                  evaluator_type="ucf_jhmdb")
    pairs = _ucf_predictions(load_gt_pickle(gt_path))
    rank, world = comm.get_rank(), comm.get_world_size()
    size = (len(pairs) + world - 1) // world
    shard = pairs[rank * size:(rank + 1) * size]
    if rank == world - 1 and world > 1:
        shard = [pairs[rank * size - 1]] + shard
    evaluator = UCFJHMDBEvaluator(name, out, link_kwargs={"min_length": 3}, distributed=world > 1)
    evaluator.reset()
    for inputs, outputs in shard:
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data_root = tmp_path_factory.mktemp("ava_like_dist")
    names = generate_dataset(data_root, PREFIX, num_val_videos=3)  # 4 keyframes
    write_pickle(data_root, small_ucf_gt(), "ucf_gt.pkl")
    out = str(tmp_path_factory.mktemp("dist_runs"))
    launch(_two_process_session, 2, dist_url="auto", args=(str(data_root), out))
    return names, out, str(data_root)


def _metrics(folder, name):
    with open(os.path.join(folder, "inference", name, "ava_metrics.json")) as f:
        return json.load(f)


def _detections(folder, name):
    with open(os.path.join(folder, "inference", name, "ava_detections.csv")) as f:
        return list(csv.reader(f))


def test_two_cpu_processes_train_with_ddp_and_write_checkpoints(runs):
    names, out, _ = runs
    straight = os.path.join(out, "straight")
    for rank in (0, 1):
        with open(os.path.join(out, f"ddp_rank{rank}.json")) as f:
            # Both runs of both processes: DDP without device_ids (what DDP wants for a CPU module).
            assert json.load(f)["ddp"] == [["DistributedDataParallel", None]] * 3
    for name in ("model_0000002.pth", "model_0000005.pth", "model_final.pth"):
        assert os.path.getsize(os.path.join(straight, name)) > 0, name
    ckpt = torch.load(os.path.join(straight, "model_final.pth"), weights_only=True)
    assert ckpt["iteration"] == 5
    # Each process's own RNG state is in the checkpoint, and they differ (seed + rank).
    ranks = ckpt["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    lines = [json.loads(line) for line in open(os.path.join(straight, "metrics.json"))]
    assert [line["iteration"] for line in lines if "total_loss" in line][-1] == 5
    # Only the main process writes the log file; the other one writes log.txt.rank1.
    assert os.path.exists(os.path.join(straight, "log.txt")) and os.path.exists(os.path.join(straight, "log.txt.rank1"))


def test_two_processes_train_a_model_with_parameters_that_get_no_gradient(runs):
    _, out, _ = runs
    ckpt = torch.load(os.path.join(out, "no_deep_supervision", "model_final.pth"), weights_only=True)
    assert ckpt["iteration"] == 1


def test_two_process_resume_continues_exactly(runs):
    _, out, _ = runs
    straight = torch.load(os.path.join(out, "straight", "model_final.pth"), weights_only=True)
    resumed = torch.load(os.path.join(out, "split", "model_final.pth"), weights_only=True)
    assert resumed["iteration"] == straight["iteration"] == 5
    for k, v in straight["model"].items():
        assert torch.equal(resumed["model"][k], v), k
    sched = [c["trainer"]["hooks"]["LRScheduler"] for c in (straight, resumed)]
    assert sched[0] == sched[1]


def test_two_process_eval_only_equals_one_process(runs, tmp_path):
    names, out, _ = runs
    final = os.path.join(out, "straight", "model_final.pth")
    args = train_args(names, tmp_path, "MODEL.WEIGHTS", final, eval_only=True)
    with EventStorage():
        one = train_and_evaluate(args)
    two_folder = os.path.join(out, "eval2")
    metrics = _metrics(str(tmp_path), names["val"])
    assert _metrics(two_folder, names["val"]) == metrics
    assert metrics["num_keyframes"] == 4  # 2 per process
    assert 100.0 * metrics["mAP"] == pytest.approx(one["ava"]["frame_mAP@0.5"], abs=1e-9)
    # The gathered detections are one process's: every keyframe once, same boxes and scores, same order.
    two, single = _detections(two_folder, names["val"]), _detections(str(tmp_path), names["val"])
    assert len({(row[0], row[1]) for row in single}) == 4
    assert two == single


def test_ucf_jhmdb_evaluation_gathered_from_two_processes_equals_one_process(runs, tmp_path):
    _, out, data_root = runs
    two = json.loads(open(os.path.join(out, "ucf2", "ucf_jhmdb_metrics.json")).read())
    one_results = _ucf_evaluation(os.path.join(data_root, "ucf_gt.pkl"), str(tmp_path))["ucf_jhmdb"]
    one = json.loads((tmp_path / "ucf_jhmdb_metrics.json").read_text())
    assert two == one
    assert 0 < one_results["frame_mAP@0.5"] < 100 and 0 < one_results["video_mAP@0.2"] <= 100  # not trivial
