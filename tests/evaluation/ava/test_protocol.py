"""AVA frame-mAP by the official protocols (evaluation/ava/protocol.py, activitynet.py), person AP."""
import json
import math

import numpy as np
import pytest

from evad_d2.evaluation.ava import activitynet as ava_activitynet
from evad_d2.evaluation.ava import (
    evaluate_ava_files,
    evaluate_person_ap,
    main,
)
from evad_d2.evaluation.ap import voc_average_precision
from evad_d2.testing import BOM, AVA_GT3 as GT3, AVA_BOX_A as A, AVA_BOX_B as B, evaluate_ava_rows, write_ava_files


def test_perfect_detector_scores_100(tmp_path):
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3]
    r = evaluate_ava_rows(tmp_path, GT3, det)
    assert r.mean_ap == pytest.approx(1.0)
    assert r.per_class_ap == {1: 1.0, 2: 1.0, 3: 1.0}


def test_perfect_but_missing_one_class(tmp_path):
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3 if c != 3]
    r = evaluate_ava_rows(tmp_path, GT3, det)
    assert r.per_class_ap[3] == 0.0
    assert r.mean_ap == pytest.approx(2 / 3)


def test_duplicate_detection_is_false_positive(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 903, A, 1, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 902, A, 1, 0.8), ("v", 903, A, 1, 0.7)]
    # Ranked TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3.
    r = evaluate_ava_rows(tmp_path, gt, det, classes=(1,))
    assert r.mean_ap == pytest.approx(5 / 6)


def test_best_box_taken_means_false_positive(tmp_path):
    g1, g2 = (0.0, 0.0, 0.4, 1.0), (0.2, 0.0, 0.6, 1.0)
    d2 = (0.1, 0.0, 0.48, 1.0)  # IoU 0.625 with g1 (already taken), 0.56 with g2
    gt = [("v", 902, g1, 1, 0), ("v", 902, g2, 1, 1)]
    r = evaluate_ava_rows(tmp_path, gt, [("v", 902, g1, 1, 0.9), ("v", 902, d2, 1, 0.8)], classes=(1,))
    assert r.mean_ap == pytest.approx(0.5)  # TP, FP over 2 boxes: 1/2 * 1


def test_duplicate_groundtruth_rows_are_two_instances(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 902, A, 1, 0)]
    r = evaluate_ava_rows(tmp_path, gt, [("v", 902, A, 1, 0.9), ("v", 902, A, 1, 0.8)], classes=(1,))
    assert r.num_groundtruth[1] == 2
    assert r.mean_ap == pytest.approx(0.5)  # the second detection also picks the first copy


def test_excluded_timestamps_do_not_count(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 905, A, 1, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 905, B, 1, 0.95)]
    # Without exclusions: FP (0.95) then TP (0.9) over 2 boxes -> 1/2 * 1/2.
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,)).mean_ap == pytest.approx(0.25)
    r = evaluate_ava_rows(tmp_path, gt, det, classes=(1,), exclusions=[("v", 905)])
    assert r.mean_ap == pytest.approx(1.0)
    assert r.num_groundtruth[1] == 1


def test_detection_on_frame_without_groundtruth_is_false_positive(tmp_path):
    gt = [("v", 902, A, 1, 0)]
    r = evaluate_ava_rows(tmp_path, gt, [("v", 999, A, 1, 0.95), ("v", 902, A, 1, 0.9)], classes=(1,))
    assert r.mean_ap == pytest.approx(0.5)


def test_class_without_groundtruth_left_out_of_mean(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 902, B, 2, 1)]
    det = [("v", 902, A, 1, 0.9), ("v", 902, B, 2, 0.9), ("v", 902, B, 3, 0.99)]
    r = evaluate_ava_rows(tmp_path, gt, det, classes=(1, 2, 3))
    assert math.isnan(r.per_class_ap[3])
    assert r.mean_ap == pytest.approx(1.0)


def test_rows_outside_label_map_are_ignored(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 902, A, 7, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 902, B, 7, 0.99)]
    r = evaluate_ava_rows(tmp_path, gt, det, classes=(1,))
    assert r.mean_ap == 1.0 and list(r.per_class_ap) == [1]


def test_voc_ap_precision_recall_steps(tmp_path):
    frames = [902, 903, 904]
    gt = [("v", t, A, 1, 0) for t in frames]
    det = [("v", 902, A, 1, 0.9), ("v", 902, B, 1, 0.8), ("v", 903, A, 1, 0.7), ("v", 903, B, 1, 0.6), ("v", 904, A, 1, 0.5)]
    # precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1; interpolated 1, 2/3, 3/5.
    expected = (1 + 2 / 3 + 3 / 5) / 3
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,)).mean_ap == pytest.approx(expected)
    p = np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    r = np.array([1, 1, 2, 2, 3]) / 3
    assert voc_average_precision(p, r) == pytest.approx(expected)
    assert voc_average_precision(np.zeros(0), np.zeros(0)) == 0.0


def test_protocols_differ_as_documented(tmp_path):
    gt = [("v", 902, A, 1, 0)]
    # In file order the lower-scored copy comes first: PySlowFast matches it first.
    det = [("v", 902, A, 1, 0.3), ("v", 902, A, 1, 0.9)]
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,), protocol="pyslowfast").mean_ap == pytest.approx(0.5)
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,), protocol="activitynet").mean_ap == pytest.approx(1.0)
    # ActivityNet keeps the 50 best rows of a frame: the true positive ranked 56th is dropped.
    far = (0.6, 0.6, 0.7, 0.7)
    det = [("v", 902, far, 1, 0.5 + i / 1000) for i in range(55)] + [("v", 902, A, 1, 0.1)]
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,), protocol="pyslowfast").mean_ap == pytest.approx(1 / 56)
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,), protocol="activitynet").mean_ap == 0.0


def test_keyframes_subset(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 903, A, 1, 0)]
    gt_p, det_p, lm, _ = write_ava_files(tmp_path, gt, [("v", 902, A, 1, 0.9)], classes=(1,))
    full, _ = evaluate_ava_files(gt_p, det_p, lm)
    part, _ = evaluate_ava_files(gt_p, det_p, lm, keyframes=[("v", 902)])
    assert full.mean_ap == pytest.approx(0.5) and part.mean_ap == pytest.approx(1.0)


def test_activitynet_vectorised_read_equals_heap():
    """Per (frame, class), the vectorised top-k read yields the heap's rows in the heap's order."""
    rng = np.random.default_rng(4)
    for capacity in (0, 1, 5):
        n = 3000
        keys = rng.integers(0, 40, n)
        boxes = rng.integers(0, 3, (n, 4)) / 4.0
        labels = rng.integers(1, 4, n)
        scores = rng.integers(0, 12, n) / 10.0  # many ties
        fast = ava_activitynet.activitynet_read(keys, boxes, labels, scores, capacity)
        exact = ava_activitynet.activitynet_read_exact(keys, boxes, labels, scores, capacity)

        def per_group(out):
            k, b, lab, s = out
            groups = {}
            for i in range(len(k)):
                groups.setdefault((int(k[i]), int(lab[i])), []).append((s[i], *b[i]))
            return list(dict.fromkeys(k.tolist())), groups

        assert per_group(fast) == per_group(exact)


def test_pyslowfast_frames_by_first_appearance(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 903, B, 1, 0)]
    grouped = [("v", 902, A, 1, 0.3), ("v", 902, B, 1, 0.6), ("v", 903, B, 1, 0.6), ("v", 903, A, 1, 0.9)]
    interleaved = [grouped[0], grouped[2], grouped[1], grouped[3]]
    # Frame 902 first (FP 0.6 after TP 0.3 in file order), then 903; ranked 0.9 FP, 0.6 TP, 0.6 FP, 0.3 TP.
    a = evaluate_ava_rows(tmp_path, gt, grouped, classes=(1,))
    b = evaluate_ava_rows(tmp_path, gt, interleaved, classes=(1,))
    assert a.mean_ap == b.mean_ap


def test_person_ap():
    gt_frames = [("v", 1), ("v", 1), ("v", 1), ("v", 2)]
    gt_boxes = np.array([A, A, B, A])  # A on frame 1 twice (two actions): one person
    det_frames = [("v", 1), ("v", 1), ("v", 2), ("v", 3)]
    det_boxes = np.array([A, B, A, A])
    perfect = evaluate_person_ap(gt_frames, gt_boxes, det_frames[:3], det_boxes[:3], np.array([0.9, 0.8, 0.7]))
    assert perfect == pytest.approx(1.0)
    # A false positive (frame 3 has no people) ranked second: precision 1, 1/2, 2/3, 3/4.
    ap = evaluate_person_ap(gt_frames, gt_boxes, det_frames, det_boxes, np.array([0.9, 0.5, 0.4, 0.8]))
    assert ap == pytest.approx(1 / 3 * (1 + 3 / 4 + 3 / 4))
    excl = evaluate_person_ap(gt_frames, gt_boxes, det_frames, det_boxes, np.array([0.9, 0.5, 0.4, 0.8]),
                              excluded=[("v", 3)])
    assert excl == pytest.approx(1.0)


def test_byte_order_mark_in_exclusions(tmp_path):
    gt = [("v", 905, A, 1, 0), ("v", 902, A, 1, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 905, B, 1, 0.95)]
    gt_p, det_p, lm, ex = write_ava_files(tmp_path, gt, det, classes=(1,))
    with open(ex, "w", encoding="utf-8") as f:
        f.write(BOM + "v,0905\n")
    # 0905 excluded: TP over 1 box -> 1 (not excluded: FP 0.95 then TP 0.9 over 2 boxes -> 1/4).
    assert evaluate_ava_files(gt_p, det_p, lm, ex)[0].mean_ap == 1.0


def test_warns_when_no_detected_keyframe_is_a_groundtruth_keyframe(tmp_path, caplog, capsys):
    """Timestamps written from the clip start (0002) instead of the video start (0902)."""
    gt = [("vidA", 902, A, 1, 0), ("vidA", 903, A, 1, 0)]
    det = [("vidA", 2, A, 1, 0.9), ("vidA", 3, A, 1, 0.9)]
    gt_p, det_p, lm, _ = write_ava_files(tmp_path, gt, det, classes=(1,))
    with caplog.at_level("WARNING", logger="evad_d2.evaluation.ava"):
        result, _ = evaluate_ava_files(gt_p, det_p, lm)
    assert result.mean_ap == 0.0
    (warning,) = result.warnings
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]
    assert "none of the 2 keyframes with detections is a ground-truth keyframe (2 listed)" in warning
    assert "Ground truth: vidA,0902, vidA,0903, ...; detections: vidA,0002, vidA,0003, ..." in warning
    assert "900 s less than the ground truth's" in warning and "add 900" in warning
    out_json = tmp_path / "m.json"
    assert main(["-g", gt_p, "-d", det_p, "-l", lm, "--json", str(out_json)]) == 0
    assert f"warning: {warning}" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["warnings"] == [warning]

    # Other video ids: no +900 hint; one matching keyframe: no warning.
    _, det_p, _, _ = write_ava_files(tmp_path, gt, [("other", 902, A, 1, 0.9)], classes=(1,))
    result, _ = evaluate_ava_files(gt_p, det_p, lm)
    assert "Check that both files name videos and timestamps" in result.warnings[0]
    _, det_p, _, _ = write_ava_files(tmp_path, gt, det + [("vidA", 903, A, 1, 0.5)], classes=(1,))
    assert evaluate_ava_files(gt_p, det_p, lm)[0].warnings == []


def test_activitynet_ignores_detections_on_frames_the_groundtruth_does_not_list(tmp_path):
    """Issue 13's minimal case: ActivityNet's script gives 100, PySlowFast's 50 (both run beside ours)."""
    gt = [("v", 902, (0.1, 0.1, 0.5, 0.5), 1, 0)]
    det = [("v", 902, (0.1, 0.1, 0.5, 0.5), 1, 0.5), ("v", 903, (0.1, 0.1, 0.5, 0.5), 1, 0.9)]
    # PySlowFast: FP (0.9, frame 0903) then TP (0.5): precision 1/2 at recall 1.
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,), protocol="pyslowfast").mean_ap == 0.5
    assert evaluate_ava_rows(tmp_path, gt, det, classes=(1,), protocol="activitynet").mean_ap == 1.0
    # A frame is listed by a row of a class outside the label map, or by a two-column row: then
    # its detections are false positives under ActivityNet's protocol too.
    for listing in ("v,0903,0.1,0.1,0.5,0.5,7,0\n", "v,0903\n", "v,903\n"):
        gt_p, det_p, lm, _ = write_ava_files(tmp_path, gt, det, classes=(1,))
        with open(gt_p, "a") as f:
            f.write(listing)
        assert evaluate_ava_files(gt_p, det_p, lm, protocol="activitynet")[0].mean_ap == 0.5, listing


def test_person_ap_ranks_tied_detections_in_matching_order():
    """One person, two identical detections at 0.9: the copy that took the box is ranked first."""
    ap = evaluate_person_ap([("v", 1)], np.array([A]), [("v", 1), ("v", 1)], np.array([A, A]), np.array([0.9, 0.9]))
    assert ap == 1.0  # TP then FP: precision 1 at recall 1 (ranked FP first it would be 1/2)
    # A tie between a false positive (frame 2, no people) and a true positive: given order.
    ap = evaluate_person_ap([("v", 1)], np.array([A]), [("v", 2), ("v", 1)], np.array([A, A]), np.array([0.9, 0.9]))
    assert ap == 0.5


def test_warns_when_groundtruth_has_no_evaluated_class(tmp_path):
    r = evaluate_ava_rows(tmp_path, [("v", 902, A, 7, 0)], [("v", 902, A, 1, 0.9)], classes=(1, 2))
    assert math.isnan(r.mean_ap)
    assert r.warnings == [
        "the ground truth has no rows of the 2 evaluated classes (ids 1, 2) outside excluded keyframes, so "
        "the frame-mAP is undefined (nan); check the ground-truth file and that the label map is the one it was "
        "written with"
    ]


def test_evaluation_reads_both_released_label_map_forms(tmp_path):
    """AVA's own action list (label { name label_id label_type }) and ActivityNet's (item { name id })."""
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3 if c != 3]
    gt, det_p, _, _ = write_ava_files(tmp_path, GT3, det)
    ava_form = tmp_path / "ava_action_list_v2.2.pbtxt"
    ava_form.write_text(
        'label {\n  name: "act1"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
        'label {\n  name: "act2"\n  label_id: 2\n  label_type: OBJECT_MANIPULATION\n}\n'
        'label {\n  name: "act3"\n  label_id: 3\n  label_type: PERSON_INTERACTION\n}\n'
    )
    item_form = tmp_path / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    item_form.write_text('item {\n  name: "act1"\n  id: 1\n}\nitem {\n  name: "act3"\n  id: 3\n}\n')
    r80, names = evaluate_ava_files(gt, det_p, str(ava_form))
    assert names == {1: "act1", 2: "act2", 3: "act3"} and r80.mean_ap == pytest.approx(2 / 3)
    r60, names = evaluate_ava_files(gt, det_p, str(item_form))
    assert names == {1: "act1", 3: "act3"} and r60.mean_ap == 0.5  # class 1: 100, class 3: 0
