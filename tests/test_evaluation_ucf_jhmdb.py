"""UCF101-24 / JHMDB evaluation: GT pickle, frame-mAP, tube linking, tube IoU, video-mAP, evaluator."""
import json
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from evad_d2.evaluation.ucf_jhmdb import (
    FrameDetections,
    GTPickleError,
    Tube,
    UCFJHMDBEvaluator,
    frame_map,
    link_tubes,
    load_gt_pickle,
    tube_iou,
    video_map,
)


def _tube(frames, box):
    frames = np.asarray(list(frames), dtype=np.float64)
    return np.concatenate([frames[:, None], np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1))], axis=1)


def _gt():
    """Two test videos (class 0 and class 1) and a training video."""
    return {
        "labels": ["run", "jump"],
        "gttubes": {
            "run/v1": {0: [_tube(range(1, 11), [0, 0, 10, 10])]},
            "jump/v2": {1: [_tube(range(3, 9), [20, 20, 40, 50])]},
            "run/v0": {0: [_tube(range(1, 5), [0, 0, 10, 10])]},
        },
        "nframes": {"run/v1": 12, "jump/v2": 10, "run/v0": 5},
        "train_videos": [["run/v0"]],
        "test_videos": [["run/v1", "jump/v2"]],
        "resolution": {"run/v1": (60, 80), "jump/v2": (60, 80), "run/v0": (60, 80)},
    }


def _write(tmp_path, obj, name="gt.pkl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


def test_load_gt_pickle_and_errors(tmp_path):
    gt = load_gt_pickle(_write(tmp_path, _gt()))
    assert gt["gttubes"]["run/v1"][0][0].shape == (10, 5)
    bad = _gt()
    del bad["resolution"]
    with pytest.raises(GTPickleError, match=r"bad.pkl: missing key\(s\) \['resolution'\]"):
        load_gt_pickle(_write(tmp_path, bad, "bad.pkl"))
    bad = _gt()
    bad["gttubes"]["run/v1"][0] = [np.zeros((4, 4))]
    with pytest.raises(GTPickleError, match=r"gttubes\['run/v1'\]\[0\]\[0\] must be an \(n, 5\) array"):
        load_gt_pickle(_write(tmp_path, bad, "bad.pkl"))
    bad = _gt()
    bad["gttubes"]["run/v1"][5] = bad["gttubes"]["run/v1"].pop(0)
    with pytest.raises(GTPickleError, match="label 5 outside 0..1"):
        load_gt_pickle(_write(tmp_path, bad, "bad.pkl"))
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(GTPickleError, match="junk.pkl: not a readable pickle"):
        load_gt_pickle(str(tmp_path / "junk.pkl"))


def _perfect(gt, videos, classes=(0, 1), extra=None):
    """One detection per annotated frame with score 1 for its class and 0.1 for the others."""
    dets = FrameDetections([], np.zeros(0, dtype=np.int64), [], [])
    frames = []
    for v in videos:
        for label, tubes in gt["gttubes"][v].items():
            for t in tubes:
                for row in t:
                    s = np.full((1, 2), 0.1)
                    if label in classes:
                        s[0, label] = 1.0
                    dets.video.append(v)
                    frames.append(int(row[0]))
                    dets.boxes.append(row[None, 1:5])
                    dets.scores.append(s)
    for v, f, box, s in extra or []:
        dets.video.append(v)
        frames.append(f)
        dets.boxes.append(np.array([box], dtype=np.float64))
        dets.scores.append(np.array([s], dtype=np.float64))
    dets.frame = np.array(frames)
    return dets


def test_frame_map_hand_values(tmp_path):
    gt = load_gt_pickle(_write(tmp_path, _gt()))
    videos = ["run/v1", "jump/v2"]
    m, aps = frame_map(gt, _perfect(gt, videos), videos)
    assert m == pytest.approx(1.0) and aps == {0: 1.0, 1: 1.0}
    # Perfect but the "jump" video is never detected: (C - 1) / C.
    m, aps = frame_map(gt, _perfect(gt, ["run/v1"]), videos)
    assert aps == {0: 1.0, 1: 0.0} and m == pytest.approx(0.5)
    # A duplicate on frame 1 of run/v1 ranked first among equals: TP x10 and one FP (score 0.9).
    dup = [("run/v1", 1, [0, 0, 10, 10], [0.9, 0.0])]
    m, aps = frame_map(gt, _perfect(gt, videos, extra=dup), videos)
    # Ranked: 10 TP at 1.0, then the duplicate (FP) at 0.9: AP stays 1; a higher-scored one would not.
    assert aps[0] == pytest.approx(1.0)
    dup = [("run/v1", 1, [50, 50, 60, 60], [1.5, 0.0])]  # a miss ranked first
    m, aps = frame_map(gt, _perfect(gt, videos, extra=dup), videos)
    # precision 0, 1/2, 2/3, ..., 10/11 at recall 0, 1/10, ..., 1: interpolated 10/11 throughout.
    assert aps[0] == pytest.approx(10 / 11)
    # Only processed frames: a detection set covering half of run/v1 scores 1 on that half.
    half = _perfect(gt, ["run/v1"])
    keep = np.flatnonzero(half.frame <= 5)
    half = FrameDetections([half.video[i] for i in keep], half.frame[keep], [half.boxes[i] for i in keep],
                           [half.scores[i] for i in keep])
    assert frame_map(gt, half, ["run/v1"])[1][0] == pytest.approx(0.5)
    assert frame_map(gt, half, ["run/v1"], only_processed_frames=True)[1][0] == pytest.approx(1.0)


def test_tube_iou_hand_value():
    a = _tube(range(1, 11), [0, 0, 10, 10])
    b = _tube(range(6, 16), [5, 0, 15, 10])
    # temporal 5/15, spatial 50/150
    assert tube_iou(a, b) == pytest.approx(1 / 9)
    assert tube_iou(a, _tube(range(20, 30), [0, 0, 10, 10])) == 0.0
    assert tube_iou(a, a) == pytest.approx(1.0)


def test_video_map_two_tubes(tmp_path):
    gt = {
        "labels": ["a"],
        "gttubes": {"v1": {0: [_tube(range(1, 11), [0, 0, 10, 10])]}, "v2": {0: [_tube(range(1, 11), [20, 20, 30, 30])]}},
    }
    exact = Tube(np.arange(1, 11), np.tile([0.0, 0, 10, 10], (10, 1)), 0.8)
    taller = Tube(np.arange(1, 11), np.tile([20.0, 20, 30, 35], (10, 1)), 0.9)  # IoU 100/150 = 2/3
    res = video_map(gt, {("v1", 0): [exact], ("v2", 0): [taller]}, ["v1", "v2"])
    assert res[0.2][0] == pytest.approx(1.0)
    assert res[0.5][0] == pytest.approx(1.0)
    # From 0.7 on, the better-scored tube misses: precision 0, 1/2 at recall 0, 1/2 -> AP 1/4.
    assert res[0.7][0] == pytest.approx(0.25)
    avg = np.mean([res[t][0] for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)])
    assert avg == pytest.approx((4 * 1.0 + 6 * 0.25) / 10)


def test_link_tubes_synthetic_sequence():
    frames, boxes, scores = [], [], []
    for t in range(1, 21):
        moving = [t, 0, t + 10, 10]
        dets = [moving, [t + 0.5, 0, t + 10.5, 10]]  # a near-duplicate, removed by NMS
        sc = [0.9, 0.6]
        if t <= 5:
            dets.append([60, 60, 70, 70])  # a short distractor: dropped (< 15 frames)
            sc.append(0.95)
        frames.append(t)
        boxes.append(np.array(dets, dtype=np.float64))
        scores.append(np.array(sc))
    tubes = link_tubes(frames, boxes, scores)
    assert len(tubes) == 1
    assert tubes[0].frames.tolist() == list(range(1, 21))
    np.testing.assert_allclose(tubes[0].boxes, [[t, 0, t + 10, 10] for t in range(1, 21)])
    assert tubes[0].score == pytest.approx(0.9)

    # Every other frame processed: the tube bridges the gaps and interpolates the boxes.
    odd = [i for i, t in enumerate(frames) if t % 2 == 1]
    tubes = link_tubes([frames[i] for i in odd], [boxes[i] for i in odd], [scores[i] for i in odd])
    assert len(tubes) == 1 and tubes[0].frames.tolist() == list(range(1, 20))
    np.testing.assert_allclose(tubes[0].boxes[1], [2, 0, 12, 10])
    # A jump larger than the link IoU allows splits the sequence into two tubes.
    jump = [b if t <= 10 else b + np.array([30.0, 0, 30, 0]) for t, b in zip(frames, boxes)]
    tubes = link_tubes(frames, jump, scores, min_length=5)
    assert sorted(len(t.frames) for t in tubes) == [5, 10, 10]  # distractor, before, after


def test_evaluator_end_to_end(tmp_path):
    gt_path = _write(tmp_path, _gt())
    name = "evad_test_ucf_eval"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(gt_file=gt_path, split=1, action_classes=["run", "jump"], evaluator_type="ucf_jhmdb")
    gt = load_gt_pickle(gt_path)
    ev = UCFJHMDBEvaluator(name, str(tmp_path / "out"), link_kwargs={"min_length": 3})
    ev.reset()
    for v in ("run/v1", "jump/v2"):
        label = 0 if v.startswith("run") else 1
        tube = gt["gttubes"][v][label][0]
        for t in range(1, gt["nframes"][v] + 1):
            row = tube[tube[:, 0] == t]
            # The model works at half resolution: boxes are rescaled to the pickle's (60, 80).
            boxes = row[:, 1:5] / 2 if len(row) else np.zeros((0, 4))
            scores = np.zeros((len(boxes), 2))
            scores[:, label] = 0.9
            inst = Instances((30, 40), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                             scores=torch.full((len(boxes),), 0.9), pred_action_scores=torch.tensor(scores))
            ev.process([{"video_id": v, "timestamp": t, "height": 30, "width": 40}], [{"instances": inst}])
    res = ev.evaluate()["ucf_jhmdb"]
    assert res["frame_mAP@0.5"] == pytest.approx(100.0)
    assert res["video_mAP@0.2"] == pytest.approx(100.0)
    assert res["video_mAP@0.5"] == pytest.approx(100.0)
    assert res["video_mAP@0.5:0.95"] == pytest.approx(100.0)
    assert res["AP-run"] == pytest.approx(100.0) and res["AP-jump"] == pytest.approx(100.0)
    metrics = json.loads((tmp_path / "out" / "ucf_jhmdb_metrics.json").read_text())
    assert metrics["frame_mAP@0.5"] == pytest.approx(100.0)
    assert (tmp_path / "out" / "ucf_jhmdb_per_class_ap.png").read_bytes()[:4] == b"\x89PNG"
