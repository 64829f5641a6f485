"""UCF101-24 / JHMDB evaluation: frame-mAP, tube linking, tube IoU, video-mAP, evaluator (the GT
pickle reader: tests/data/formats/test_ucf_jhmdb.py).

Expectations are hand-computed for both protocols: ACT (the default; the code published numbers
come from) and VOC. Comparison with the ACT code itself on random cases is done outside the tests.
"""
import json
import os
import pickle
import tempfile

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from evad_d2.data import register_ucf_jhmdb
from evad_d2.data.formats.ucf_jhmdb import load_gt_pickle
from evad_d2.evaluation.ap import act_average_precision, box_iou
from evad_d2.evaluation.ucf_jhmdb import (
    ACT_TUBE_NMS_OVERLAP,
    DEFAULT_PROTOCOL,
    VIDEO_MAP_THRESHOLDS,
    FrameDetections,
    Tube,
    UCFJHMDBEvaluator,
    frame_map,
    link_tubes,
    tube_iou,
    tube_nms,
    video_map,
)
from evad_d2.testing import small_ucf_gt, ucf_tube, write_pickle


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


def test_frame_map_voc_hand_values(tmp_path):
    gt = load_gt_pickle(write_pickle(tmp_path, small_ucf_gt()))
    videos = ["run/v1", "jump/v2"]
    m, aps = frame_map(gt, _perfect(gt, videos), videos, protocol="voc")
    assert m == pytest.approx(1.0) and aps == {0: 1.0, 1: 1.0}
    # Perfect but the "jump" video is never detected: (C - 1) / C.
    m, aps = frame_map(gt, _perfect(gt, ["run/v1"]), videos, protocol="voc")
    assert aps == {0: 1.0, 1: 0.0} and m == pytest.approx(0.5)
    # A duplicate on frame 1 of run/v1 ranked first among equals: TP x10 and one FP (score 0.9).
    dup = [("run/v1", 1, [0, 0, 10, 10], [0.9, 0.0])]
    m, aps = frame_map(gt, _perfect(gt, videos, extra=dup), videos, protocol="voc")
    # Ranked: 10 TP at 1.0, then the duplicate (FP) at 0.9: AP stays 1; a higher-scored one would not.
    assert aps[0] == pytest.approx(1.0)
    dup = [("run/v1", 1, [50, 50, 60, 60], [1.5, 0.0])]  # a miss ranked first
    m, aps = frame_map(gt, _perfect(gt, videos, extra=dup), videos, protocol="voc")
    # precision 0, 1/2, 2/3, ..., 10/11 at recall 0, 1/10, ..., 1: interpolated 10/11 throughout.
    assert aps[0] == pytest.approx(10 / 11)
    # Only processed frames: a detection set covering half of run/v1 scores 1 on that half.
    half = _perfect(gt, ["run/v1"])
    keep = np.flatnonzero(half.frame <= 5)
    half = FrameDetections([half.video[i] for i in keep], half.frame[keep], [half.boxes[i] for i in keep],
                           [half.scores[i] for i in keep])
    assert frame_map(gt, half, ["run/v1"], protocol="voc")[1][0] == pytest.approx(0.5)
    assert frame_map(gt, half, ["run/v1"], only_processed_frames=True, protocol="voc")[1][0] == pytest.approx(1.0)


def test_tube_iou_hand_value():
    a = ucf_tube(range(1, 11), [0, 0, 10, 10])
    b = ucf_tube(range(6, 16), [5, 0, 15, 10])
    # temporal 5/15, spatial 50/150
    assert tube_iou(a, b) == pytest.approx(1 / 9)
    assert tube_iou(a, ucf_tube(range(20, 30), [0, 0, 10, 10])) == 0.0
    assert tube_iou(a, a) == pytest.approx(1.0)
    # ACT's pixels: boxes 11 wide, overlap 6 x 11 -> 66 / (121 + 121 - 66) = 3/8 on 5 frames of 15.
    assert tube_iou(a, b, pixel_inclusive=True) == pytest.approx(5 / 15 * 66 / 176)


def test_video_map_two_tubes_voc(tmp_path):
    gt = {
        "labels": ["a"],
        "gttubes": {"v1": {0: [ucf_tube(range(1, 11), [0, 0, 10, 10])]}, "v2": {0: [ucf_tube(range(1, 11), [20, 20, 30, 30])]}},
    }
    exact = Tube(np.arange(1, 11), np.tile([0.0, 0, 10, 10], (10, 1)), 0.8)
    taller = Tube(np.arange(1, 11), np.tile([20.0, 20, 30, 35], (10, 1)), 0.9)  # IoU 100/150 = 2/3
    res = video_map(gt, {("v1", 0): [exact], ("v2", 0): [taller]}, ["v1", "v2"], protocol="voc")
    assert res[0.2][0] == pytest.approx(1.0)
    assert res[0.5][0] == pytest.approx(1.0)
    # From 0.7 on, the better-scored tube misses: precision 0, 1/2 at recall 0, 1/2 -> AP 1/4.
    assert res[0.7][0] == pytest.approx(0.25)
    avg = np.mean([res[t][0] for t in VIDEO_MAP_THRESHOLDS])
    assert avg == pytest.approx((4 * 1.0 + 6 * 0.25) / 10)
    # ACT: IoU (11 x 11) / (11 x 16) = 0.6875, still a hit up to 0.65; a miss ranked first then a
    # hit: trapezoid (1, 0) -> (0, 0) -> (1/2, 1/2) = 1/2 * (0 + 1/2) / 2 = 1/8.
    res = video_map(gt, {("v1", 0): [exact], ("v2", 0): [taller]}, ["v1", "v2"], protocol="act")
    assert res[0.5][0] == pytest.approx(1.0) and res[0.7][0] == pytest.approx(0.125)
    avg = np.mean([res[t][0] for t in VIDEO_MAP_THRESHOLDS])
    assert avg == pytest.approx((4 * 1.0 + 6 * 0.125) / 10)


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


@pytest.mark.parametrize("protocol", ["act", "voc"])
def test_evaluator_end_to_end(tmp_path, protocol):
    gt_path = write_pickle(tmp_path, small_ucf_gt())
    name = "evad_test_ucf_eval"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(gt_file=gt_path, split="test", split_index=0, action_classes=["run", "jump"],
                                  evaluator_type="ucf_jhmdb")
    gt = load_gt_pickle(gt_path)
    ev = UCFJHMDBEvaluator(name, str(tmp_path / "out"), link_kwargs={"min_length": 3}, protocol=protocol)
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
    assert metrics["frame_mAP@0.5"] == pytest.approx(100.0) and metrics["protocol"] == protocol
    assert "0.85" in metrics["video_mAP"]
    assert (tmp_path / "out" / "ucf_jhmdb_per_class_ap.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- ACT protocol


def _one_frame_gt(boxes, label_count=1):
    """One test video "v" of 5 frames with one single-frame ground-truth tube per box, on frame 1."""
    tubes = [np.array([[1, *b]], dtype=np.float64) for b in boxes]
    return {"labels": [f"c{i}" for i in range(label_count)], "gttubes": {"v": {0: tubes}}, "nframes": {"v": 5},
            "train_videos": [[]], "test_videos": [["v"]], "resolution": {"v": (100, 100)}}


def load_gt_pickle_from(gt):
    """The dict as :func:`load_gt_pickle` returns it (tubes sorted, float64), via a temporary file."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "gt.pkl")
        with open(path, "wb") as f:
            pickle.dump(gt, f, protocol=2)
        return load_gt_pickle(path)


def _dets(rows, num_classes=1):
    """FrameDetections of video "v" from (frame, box, score of class 0) rows, one entry per row."""
    scores = []
    for _, _, s in rows:
        sc = np.zeros((1, num_classes))
        sc[0, 0] = s
        scores.append(sc)
    return FrameDetections(["v"] * len(rows), np.array([f for f, _, _ in rows]),
                           [np.array([b], dtype=np.float64) for _, b, _ in rows], scores)


def test_act_is_the_default_protocol():
    assert DEFAULT_PROTOCOL == "act"
    with pytest.raises(ValueError, match=r"protocol must be one of \('act', 'voc'\), got 'pascal'"):
        frame_map(_one_frame_gt([[0, 0, 9, 9]]), _dets([]), ["v"], protocol="pascal")


def test_box_iou_act_adds_one_pixel_to_widths_and_heights():
    a, b = [[0, 0, 9, 9]], [[5, 0, 14, 9]]
    # ACT: both 10 x 10 pixels, overlap 5 x 10 -> 50 / 150. Continuous: 4 x 9 = 36 / (81 + 81 - 36).
    assert box_iou(a, b, pixel_inclusive=True)[0, 0] == pytest.approx(1 / 3)
    assert box_iou(a, b)[0, 0] == pytest.approx(36 / 126)
    # A one-pixel box (x1 == x2) is one pixel in ACT, empty in continuous coordinates.
    assert box_iou([[5, 5, 5, 5]], [[5, 5, 5, 5]], pixel_inclusive=True)[0, 0] == 1.0
    assert box_iou([[5, 5, 5, 5]], [[5, 5, 5, 5]])[0, 0] == 0.0


def test_act_average_precision_is_the_trapezoid_from_recall_0_precision_1():
    # FP then TP, one GT: (1, 0) -> (0, 0) -> (1/2, 1): (1 - 0) * (1/2 + 0) / 2.
    assert act_average_precision([False, True], 1) == pytest.approx(0.25)
    # TP, FP, TP of two GT: 1/2 * (1 + 1) / 2 + 0 + 1/2 * (2/3 + 1/2) / 2 = 1/2 + 7/24.
    assert act_average_precision([True, False, True], 2) == pytest.approx(0.5 + 7 / 24)
    assert act_average_precision([], 3) == 0.0
    assert act_average_precision([True, True], 2) == pytest.approx(1.0)


def test_act_frame_matching_takes_the_best_box_still_free():
    # Two GT boxes; both detections overlap A best. The second, A being taken, takes B (IoU
    # 8 x 10 / (100 + 100 - 80) = 2/3 in ACT's pixels): ACT scores 2 TP; VOC calls it a FP.
    gt = load_gt_pickle_from(_one_frame_gt([[0, 0, 9, 9], [2, 0, 11, 9]]))
    dets = _dets([(1, [0, 0, 9, 9], 0.9), (1, [0, 0, 9, 9], 0.8)])
    assert frame_map(gt, dets, ["v"], protocol="act")[0] == pytest.approx(1.0)
    # VOC: TP, FP at recall 1/2, 1/2: interpolated AP 1/2 * 1.
    assert frame_map(gt, dets, ["v"], protocol="voc")[0] == pytest.approx(0.5)
    # A detection that misses takes nothing: a later one still matches the box.
    dets = _dets([(1, [50, 50, 60, 60], 0.9), (1, [0, 0, 9, 9], 0.8), (2, [0, 0, 9, 9], 0.7)])
    gt = load_gt_pickle_from(_one_frame_gt([[0, 0, 9, 9]]))
    # FP, TP, FP (frame 2 has no GT): (1,0) (0,0) (1/2,1) (1/3,1) -> 1 * (1/2 + 0) / 2.
    assert frame_map(gt, dets, ["v"])[0] == pytest.approx(0.25)
    assert frame_map(gt, dets, ["v"], protocol="voc")[0] == pytest.approx(0.5)


def test_act_frame_ap_of_a_miss_ranked_before_ten_hits(tmp_path):
    gt = load_gt_pickle(write_pickle(tmp_path, small_ucf_gt()))
    videos = ["run/v1", "jump/v2"]
    dup = [("run/v1", 1, [50, 50, 60, 60], [1.5, 0.0])]
    aps = frame_map(gt, _perfect(gt, videos, extra=dup), videos)[1]
    # P_0 = 1, then P = 0 (the miss), then k / (k + 1) at the k-th hit, each adding recall 1/10.
    precisions = [0.0] + [k / (k + 1) for k in range(1, 11)]
    expected = sum(0.1 * (precisions[k] + precisions[k - 1]) / 2 for k in range(1, 11))
    assert aps[0] == pytest.approx(expected) and expected == pytest.approx(0.752557720)
    assert aps[1] == pytest.approx(1.0)


@pytest.mark.parametrize("protocol", ["act", "voc"])
def test_tied_duplicates_rank_in_the_order_they_were_matched(protocol):
    # One GT box, two identical detections at the same score: the one that matched is ranked
    # first, so precision is 1 at recall 1 (AP 100, not 50).
    gt = load_gt_pickle_from(_one_frame_gt([[0, 0, 9, 9]]))
    dets = _dets([(1, [0, 0, 9, 9], 0.9), (1, [0, 0, 9, 9], 0.9)])
    assert frame_map(gt, dets, ["v"], protocol=protocol)[0] == pytest.approx(1.0)
    # The same with the duplicates in one frame entry.
    one = FrameDetections(["v"], np.array([1]), [np.array([[0, 0, 9, 9], [0, 0, 9, 9]], dtype=np.float64)],
                          [np.array([[0.9], [0.9]])])
    assert frame_map(gt, one, ["v"], protocol=protocol)[0] == pytest.approx(1.0)


def test_frame_map_does_not_depend_on_the_order_frames_arrive_in(tmp_path):
    gt = load_gt_pickle(write_pickle(tmp_path, small_ucf_gt()))
    videos = ["run/v1", "jump/v2"]
    extra = [("run/v1", 3, [1, 1, 9, 9], [1.0, 0.0]), ("jump/v2", 4, [0, 0, 5, 5], [1.0, 0.5])]
    dets = _perfect(gt, videos, extra=extra)
    rev = FrameDetections(dets.video[::-1], dets.frame[::-1], dets.boxes[::-1], dets.scores[::-1])
    for protocol in ("act", "voc"):
        assert frame_map(gt, dets, videos, protocol=protocol)[1] == frame_map(gt, rev, videos, protocol=protocol)[1]


def _const_tube(frames, box, score):
    frames = np.asarray(list(frames))
    return Tube(frames, np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1)), score)


def test_tube_nms_drops_tubes_overlapping_more_than_0_3():
    assert ACT_TUBE_NMS_OVERLAP == 0.3
    tubes = [
        _const_tube(range(1, 11), [0, 0, 9, 9], 0.9),   # kept first
        _const_tube(range(1, 11), [0, 0, 9, 12], 0.8),  # IoU 100 / 130 with the first: dropped
        _const_tube(range(1, 11), [6, 0, 15, 9], 0.7),  # IoU 40 / 160 = 0.25: kept
        _const_tube(range(6, 16), [0, 0, 9, 9], 0.6),   # temporal 5 / 15 = 0.33 > 0.3: dropped
        _const_tube(range(1, 4), [0, 0, 9, 9], 0.5),    # temporal 3 / 10 = 0.3, not above: kept
    ]
    assert tube_nms(tubes).tolist() == [0, 2, 4]
    assert tube_nms(tubes, overlap=0.2).tolist() == [0]
    assert tube_nms([]).tolist() == []


def test_act_video_map_applies_tube_nms_before_scoring():
    gt = {"labels": ["a"], "gttubes": {"v1": {0: [ucf_tube(range(1, 11), [0, 0, 9, 9])]},
                                       "v2": {0: [ucf_tube(range(1, 11), [20, 20, 29, 29])]}}}
    tubes = {
        ("v1", 0): [_const_tube(range(1, 11), [0, 0, 9, 9], 0.9), _const_tube(range(1, 11), [0, 0, 9, 10], 0.8)],
        ("v2", 0): [_const_tube(range(1, 11), [20, 20, 29, 29], 0.7)],
    }
    # ACT: the near-duplicate (IoU 100 / 110) is suppressed: TP, TP -> 1.
    assert video_map(gt, tubes, ["v1", "v2"], [0.5])[0.5][0] == pytest.approx(1.0)
    # VOC: TP, FP, TP of 2 -> 1/2 * 1 + 1/2 * 2/3.
    assert video_map(gt, tubes, ["v1", "v2"], [0.5], protocol="voc")[0.5][0] == pytest.approx(0.5 + 1 / 3)


def test_video_thresholds_are_acts_values_not_rounded():
    assert VIDEO_MAP_THRESHOLDS == tuple(0.5 + 0.05 * i for i in range(10))
    assert VIDEO_MAP_THRESHOLDS[7] == 0.8500000000000001 and VIDEO_MAP_THRESHOLDS[7] > 0.85
    # Temporal IoU 17 / 20 = 0.85 exactly, boxes identical: a hit at 0.8, a miss at ACT's "0.85".
    gt = {"labels": ["a"], "gttubes": {"v": {0: [ucf_tube(range(1, 21), [0, 0, 9, 9])]}}}
    tubes = {("v", 0): [_const_tube(range(1, 18), [0, 0, 9, 9], 0.9)]}
    assert tube_iou(gt["gttubes"]["v"][0][0], tubes[("v", 0)][0].as_array(), pixel_inclusive=True) == 0.85
    res = video_map(gt, tubes, ["v"])
    assert res[VIDEO_MAP_THRESHOLDS[6]][0] == 1.0 and res[VIDEO_MAP_THRESHOLDS[7]][0] == 0.0


def test_classes_without_ground_truth_are_nan_and_left_out_of_the_mean():
    gt = load_gt_pickle_from(_one_frame_gt([[0, 0, 9, 9]], label_count=2))
    dets = _dets([(1, [0, 0, 9, 9], 0.9)], num_classes=2)
    m, aps = frame_map(gt, dets, ["v"])
    assert aps[0] == 1.0 and np.isnan(aps[1]) and m == 1.0


def test_evaluator_reads_the_split_that_register_ucf_jhmdb_sets(tmp_path):
    gt = small_ucf_gt()
    gt["test_videos"] = [["run/v0"], ["run/v1", "jump/v2"]]
    gt["train_videos"] = [["run/v1"], ["run/v0"]]
    path = write_pickle(tmp_path, gt)
    register_ucf_jhmdb("_t_ucf_split2", path, str(tmp_path), "test", 1)
    try:
        ev = UCFJHMDBEvaluator("_t_ucf_split2", distributed=False, compute_video_map=False)
        loaded = load_gt_pickle(path)
        dets = _perfect(loaded, ["run/v1", "jump/v2"])
        for v, f, b, s in zip(dets.video, dets.frame, dets.boxes, dets.scores):
            inst = Instances((60, 80), pred_boxes=Boxes(torch.tensor(b, dtype=torch.float32)),
                             pred_action_scores=torch.tensor(s, dtype=torch.float32))
            ev.process([{"video_id": v, "timestamp": int(f), "height": 60, "width": 80}], [{"instances": inst}])
        # Split 2's test videos are the detected ones: 100; split 1's (run/v0) would give 0.
        assert ev.evaluate()["ucf_jhmdb"]["frame_mAP@0.5"] == pytest.approx(100.0)
    finally:
        DatasetCatalog.remove("_t_ucf_split2")
        MetadataCatalog.remove("_t_ucf_split2")
    MetadataCatalog.get("_t_ucf_old").set(gt_file=path, split=1)
    try:
        with pytest.raises(ValueError, match=r"'_t_ucf_old': metadata 'split' must be 'train' or 'test'"):
            UCFJHMDBEvaluator("_t_ucf_old")
    finally:
        MetadataCatalog.remove("_t_ucf_old")
