"""AVA frame-mAP (official protocol), its CSV reader and command line, person AP, AVAEvaluator."""
import csv
import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from evad_d2.data.formats.ava import AvaFormatError, DetectionCsvWriter, round_decimals
from evad_d2.evaluation.ava import cli as ava_cli
from evad_d2.evaluation.ava import activitynet as ava_activitynet
from evad_d2.evaluation.ava import reader as ava_reader
from evad_d2.evaluation.ava import (
    AvaBoxes,
    detection_rows,
    evaluate_ava_files,
    evaluate_person_ap,
    main,
    read_ava_csv,
)
from evad_d2.evaluation.ap import voc_average_precision
from evad_d2.evaluation.ava.evaluator import AVAEvaluator

A = (0.1, 0.1, 0.4, 0.9)
B = (0.5, 0.2, 0.9, 0.8)


def _files(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=()):
    lm = tmp_path / "map.pbtxt"
    lm.write_text("".join(f'item {{\n  name: "act{c}"\n  id: {c}\n}}\n' for c in classes))
    gt = tmp_path / "gt.csv"
    gt.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{p}\n" for v, t, b, c, p in gt_rows))
    det = tmp_path / "det.csv"
    det.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{s}\n" for v, t, b, c, s in det_rows))
    ex = tmp_path / "ex.csv"
    ex.write_text("".join(f"{v},{t:04d}\n" for v, t in exclusions))
    return str(gt), str(det), str(lm), str(ex)


def _evaluate(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=(), protocol="pyslowfast"):
    gt, det, lm, ex = _files(tmp_path, gt_rows, det_rows, classes, exclusions)
    result, _ = evaluate_ava_files(gt, det, lm, ex, protocol=protocol)
    return result


GT3 = [("vidA", 902, A, 1, 0), ("vidA", 902, A, 2, 0), ("vidA", 903, B, 3, 1), ("vidB", 1000, B, 1, 0)]


def test_perfect_detector_scores_100(tmp_path):
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3]
    r = _evaluate(tmp_path, GT3, det)
    assert r.mean_ap == pytest.approx(1.0)
    assert r.per_class_ap == {1: 1.0, 2: 1.0, 3: 1.0}


def test_perfect_but_missing_one_class(tmp_path):
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3 if c != 3]
    r = _evaluate(tmp_path, GT3, det)
    assert r.per_class_ap[3] == 0.0
    assert r.mean_ap == pytest.approx(2 / 3)


def test_duplicate_detection_is_false_positive(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 903, A, 1, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 902, A, 1, 0.8), ("v", 903, A, 1, 0.7)]
    # Ranked TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3.
    r = _evaluate(tmp_path, gt, det, classes=(1,))
    assert r.mean_ap == pytest.approx(5 / 6)


def test_best_box_taken_means_false_positive(tmp_path):
    g1, g2 = (0.0, 0.0, 0.4, 1.0), (0.2, 0.0, 0.6, 1.0)
    d2 = (0.1, 0.0, 0.48, 1.0)  # IoU 0.625 with g1 (already taken), 0.56 with g2
    gt = [("v", 902, g1, 1, 0), ("v", 902, g2, 1, 1)]
    r = _evaluate(tmp_path, gt, [("v", 902, g1, 1, 0.9), ("v", 902, d2, 1, 0.8)], classes=(1,))
    assert r.mean_ap == pytest.approx(0.5)  # TP, FP over 2 boxes: 1/2 * 1


def test_duplicate_groundtruth_rows_are_two_instances(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 902, A, 1, 0)]
    r = _evaluate(tmp_path, gt, [("v", 902, A, 1, 0.9), ("v", 902, A, 1, 0.8)], classes=(1,))
    assert r.num_groundtruth[1] == 2
    assert r.mean_ap == pytest.approx(0.5)  # the second detection also picks the first copy


def test_excluded_timestamps_do_not_count(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 905, A, 1, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 905, B, 1, 0.95)]
    # Without exclusions: FP (0.95) then TP (0.9) over 2 boxes -> 1/2 * 1/2.
    assert _evaluate(tmp_path, gt, det, classes=(1,)).mean_ap == pytest.approx(0.25)
    r = _evaluate(tmp_path, gt, det, classes=(1,), exclusions=[("v", 905)])
    assert r.mean_ap == pytest.approx(1.0)
    assert r.num_groundtruth[1] == 1


def test_detection_on_frame_without_groundtruth_is_false_positive(tmp_path):
    gt = [("v", 902, A, 1, 0)]
    r = _evaluate(tmp_path, gt, [("v", 999, A, 1, 0.95), ("v", 902, A, 1, 0.9)], classes=(1,))
    assert r.mean_ap == pytest.approx(0.5)


def test_class_without_groundtruth_left_out_of_mean(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 902, B, 2, 1)]
    det = [("v", 902, A, 1, 0.9), ("v", 902, B, 2, 0.9), ("v", 902, B, 3, 0.99)]
    r = _evaluate(tmp_path, gt, det, classes=(1, 2, 3))
    assert math.isnan(r.per_class_ap[3])
    assert r.mean_ap == pytest.approx(1.0)


def test_rows_outside_label_map_are_ignored(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 902, A, 7, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 902, B, 7, 0.99)]
    r = _evaluate(tmp_path, gt, det, classes=(1,))
    assert r.mean_ap == 1.0 and list(r.per_class_ap) == [1]


def test_voc_ap_precision_recall_steps(tmp_path):
    frames = [902, 903, 904]
    gt = [("v", t, A, 1, 0) for t in frames]
    det = [("v", 902, A, 1, 0.9), ("v", 902, B, 1, 0.8), ("v", 903, A, 1, 0.7), ("v", 903, B, 1, 0.6), ("v", 904, A, 1, 0.5)]
    # precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1; interpolated 1, 2/3, 3/5.
    expected = (1 + 2 / 3 + 3 / 5) / 3
    assert _evaluate(tmp_path, gt, det, classes=(1,)).mean_ap == pytest.approx(expected)
    p = np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    r = np.array([1, 1, 2, 2, 3]) / 3
    assert voc_average_precision(p, r) == pytest.approx(expected)
    assert voc_average_precision(np.zeros(0), np.zeros(0)) == 0.0


def test_protocols_differ_as_documented(tmp_path):
    gt = [("v", 902, A, 1, 0)]
    # In file order the lower-scored copy comes first: PySlowFast matches it first.
    det = [("v", 902, A, 1, 0.3), ("v", 902, A, 1, 0.9)]
    assert _evaluate(tmp_path, gt, det, classes=(1,), protocol="pyslowfast").mean_ap == pytest.approx(0.5)
    assert _evaluate(tmp_path, gt, det, classes=(1,), protocol="activitynet").mean_ap == pytest.approx(1.0)
    # ActivityNet keeps the 50 best rows of a frame: the true positive ranked 56th is dropped.
    far = (0.6, 0.6, 0.7, 0.7)
    det = [("v", 902, far, 1, 0.5 + i / 1000) for i in range(55)] + [("v", 902, A, 1, 0.1)]
    assert _evaluate(tmp_path, gt, det, classes=(1,), protocol="pyslowfast").mean_ap == pytest.approx(1 / 56)
    assert _evaluate(tmp_path, gt, det, classes=(1,), protocol="activitynet").mean_ap == 0.0


def test_keyframes_subset(tmp_path):
    gt = [("v", 902, A, 1, 0), ("v", 903, A, 1, 0)]
    gt_p, det_p, lm, _ = _files(tmp_path, gt, [("v", 902, A, 1, 0.9)], classes=(1,))
    full, _ = evaluate_ava_files(gt_p, det_p, lm)
    part, _ = evaluate_ava_files(gt_p, det_p, lm, keyframes=[("v", 902)])
    assert full.mean_ap == pytest.approx(0.5) and part.mean_ap == pytest.approx(1.0)


def test_reader_parses_numbers_like_float(tmp_path):
    rng = np.random.default_rng(0)
    values = list(rng.random(300)) + [0.0, 1.0, 1e-5, 2.5e-7, 0.1 + 0.2, 0.123456789012345678]
    texts = [repr(float(v)) for v in values] + ["%.4f" % v for v in values[:50]] + ["1", ".5", "5.", "1E-3", " 0.25"]
    path = tmp_path / "d.csv"
    path.write_text("".join(f"v,902,0.1,0.2,0.3,0.4,1,{t}\n" for t in texts))
    got = read_ava_csv(str(path), with_scores=True)
    assert got.scores.tolist() == [float(t) for t in texts]
    assert got.boxes[0].tolist() == [0.1, 0.2, 0.3, 0.4]
    assert got.video_names == ["v"] and got.timestamp[0] == 902


def _brute_force_read(text, with_scores):
    """Rows of an AVA CSV read field by field with the csv module and float()."""
    rows = []
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if len(row) < 7:
            continue
        score = float(row[7]) if len(row) == 8 and (with_scores or row[7] != "") else 1.0
        rows.append((row[0], int(float(row[1])), [float(x) for x in row[2:6]], int(float(row[6])), score, line))
    return rows


def _assert_rows_equal(got: AvaBoxes, rows):
    assert [got.video_names[v] for v in got.video] == [r[0] for r in rows]
    assert got.timestamp.tolist() == [r[1] for r in rows]
    assert got.boxes.tolist() == [r[2] for r in rows]
    assert got.labels.tolist() == [r[3] for r in rows]
    assert got.scores.tolist() == [r[4] for r in rows]
    assert got.lines.tolist() == [r[5] for r in rows]


@pytest.mark.parametrize("block_bytes", [40, 1 << 22])
@pytest.mark.parametrize("with_scores", [True, False])
def test_reader_matches_brute_force_across_blocks(tmp_path, monkeypatch, block_bytes, with_scores):
    """Blocks cut anywhere, mixed column counts, blank and 2-column lines, CRLF, every number layout."""
    monkeypatch.setattr(ava_reader, "_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(3)
    layouts = ["%.3f", "%.6f", "%.4f", "%.1f", "%.0f", "%.8f", "%.12f", "%r", "%g"]
    lines = []
    for i in range(400):
        kind = rng.random()
        if kind < 0.03:
            lines.append("")
            continue
        if kind < 0.05:
            lines.append(f"vid{i % 3},0902")
            continue
        x1, y1 = rng.random(2) / 2
        layout = layouts[int(rng.integers(0, len(layouts)))]  # one per row: rounding keeps x1 <= x2
        fields = [["-5KQ66BBWC4", "v", "a_much_longer_video_name_than_usual"][i % 3], str(int(rng.integers(0, 2000))).zfill(4)]
        fields += [layout % c for c in (x1, y1, x1 + rng.random() / 2, y1 + rng.random() / 2)]
        fields.append(str(int(rng.integers(1, 81))))
        last = ["%.6f", "%r", "%.2f", "%g", "%.10f"][int(rng.integers(0, 5))] % rng.random()
        if rng.random() < 0.05:
            last = str(rng.choice(["1", ".5", "5.", "0.5", "00000.12", "1e-3", " 0.25", "0.1234567", "12345678"]))
        if with_scores or rng.random() < 0.8:
            fields.append(last if with_scores else str(rng.choice(["3", "12", ""])))
        lines.append(",".join(fields))
    text = ("\r\n" if with_scores else "\n").join(lines)  # no final line end
    path = tmp_path / "rows.csv"
    path.write_bytes(text.encode())
    got = read_ava_csv(str(path), with_scores=with_scores)
    _assert_rows_equal(got, _brute_force_read(text.replace("\r", ""), with_scores))
    assert len(got) > 350


def test_reader_reads_decimals_of_every_layout_like_float(tmp_path):
    """Scores of every length and '.' position against float(); texts float() rejects name the line."""
    rng = np.random.default_rng(0)
    texts = []
    for length in range(1, 9):
        for _ in range(300):
            digits = "".join(rng.choice(list("0123456789"), length))
            dot = int(rng.integers(-1, length))
            texts.append(digits if dot < 0 else digits[:dot] + "." + digits[dot + 1:])
    texts = [t for t in texts if t != "."] + ["-1.5", "1e5", "+3", "9" * 9]
    path = tmp_path / "d.csv"
    path.write_text("".join(f"v,902,0.1,0.2,0.3,0.4,1,{t}\n" for t in texts))
    assert read_ava_csv(str(path), with_scores=True).scores.tolist() == [float(t) for t in texts]
    for bad in ("1.2.3", "12a", ".", "1 2", "nan(1)"):
        path.write_text(f"v,902,0.1,0.2,0.3,0.4,1,0.5\nv,902,0.1,0.2,0.3,0.4,1,{bad}\n")
        with pytest.raises(AvaFormatError, match=rf"d.csv:2: score '{re.escape(bad)}' is not a number"):
            read_ava_csv(str(path), with_scores=True)


def test_round_decimals_is_python_formatting():
    rng = np.random.default_rng(1)
    ties = [k / 128 for k in range(129)] + [0.0625, 0.1875, 0.0005, 0.0015, 2.5e-7, 1.0, 0.0, -0.0, -0.0625]
    x = np.concatenate([rng.random(3000), ties, rng.random(500).astype(np.float32), np.round(rng.random(500), 4) + 5e-7])
    for digits in (3, 6):
        expected = [int(("%.*f" % (digits, v)).replace(".", "")) for v in x]
        assert round_decimals(x, digits).tolist() == expected


def test_detection_rows_text_and_values(tmp_path):
    rng = np.random.default_rng(2)
    ids = [4, 1, 12]
    frames = [("vidA", 902, 2), ("vidB", 7, 0), ("-5KQ66BBWC4", 1800, 3), ("vidA", 903, 1)]
    boxes = rng.random((6, 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    boxes[0] = [0.0625, 0.1875, 1.0, 0.5]  # exact rounding ties
    scores = rng.random((6, 3)).astype(np.float32).astype(np.float64)
    scores[:2] = [[0.5, 0.0625, 0.5], [0.5, 0.25, 0.125]]  # equal scores keep box, then class order
    buf = io.BytesIO()
    rows = detection_rows([f[0] for f in frames], [f[1] for f in frames], [f[2] for f in frames], boxes, scores, ids,
                          box_decimals=3, out=buf)
    expected, b0 = [], 0
    for video, ts, n in frames:
        flat = scores[b0:b0 + n].reshape(-1)
        for i in sorted(range(len(flat)), key=lambda i: -flat[i]):
            x1, y1, x2, y2 = boxes[b0 + i // 3]
            expected.append(f"{video},{ts:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{ids[i % 3]},{flat[i]:.6f}\n")
        b0 += n
    text = buf.getvalue().decode()
    assert text == "".join(expected)
    lines = text.splitlines()
    assert lines[:2] == ["vidA,0902,0.062,0.188,1.000,0.500,4,0.500000", "vidA,0902,0.062,0.188,1.000,0.500,12,0.500000"]
    assert lines[2].endswith(",4,0.500000") and lines[5].startswith("vidA,0902,0.062,") and lines[5].endswith(",1,0.062500")
    assert len(lines) == 6 * 3 and lines[6].startswith("-5KQ66BBWC4,1800,")
    # The returned values are exactly what the text reads back.
    path = tmp_path / "det.csv"
    path.write_text(text)
    back = read_ava_csv(str(path), with_scores=True)
    assert back.video_names == rows.video_names
    for name in ("video", "timestamp", "boxes", "labels", "scores", "lines"):
        assert np.array_equal(getattr(back, name), getattr(rows, name)), name
    with pytest.raises(ValueError, match=r"keyframe \(vidA, 902\)"):
        detection_rows(["vidA"], [902], [1], boxes[:1], np.array([[0.5, np.nan, 0.1]]), ids)


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
    a = _evaluate(tmp_path, gt, grouped, classes=(1,))
    b = _evaluate(tmp_path, gt, interleaved, classes=(1,))
    assert a.mean_ap == b.mean_ap


@pytest.mark.parametrize(
    "line, message",
    [
        ("v,902,0.1,0.2,0.3,0.4,1", "expected 8"),
        ("v,902,0.1,0.2,0.3,abc,1,0.5", "'abc' is not a number"),
        ("v,902.5,0.1,0.2,0.3,0.4,1,0.5", "whole second"),
        ("v,902,12,20,300,400,1,0.5", "outside the frame"),
        ("v,902,0.1,0.2,0.3,0.4,x,0.5", "action id"),
        ("v,902,0.1,0.2,0.3,0.4,1,nan", "not a finite number"),
    ],
)
def test_malformed_detections_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "det.csv"
    path.write_text("v,902,0.1,0.2,0.3,0.4,1,0.5\n\n" + line + "\n")
    with pytest.raises(AvaFormatError, match=message) as e:
        read_ava_csv(str(path), with_scores=True)
    assert f"{path}:3" in str(e.value)


def test_malformed_groundtruth_and_unknown_class(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("v,902,0.1,0.2,0.3,0.4,1,0\nv,902,0.5,0.2,0.3,0.4,1,0\n")
    with pytest.raises(AvaFormatError, match=r"gt.csv:2: .*x2 < x1"):
        read_ava_csv(str(path), with_scores=False)
    path.write_text("v,902,0.1,0.2,0.3,0.4,1,0\nv,902,0.1,0.2,0.3\n")
    with pytest.raises(AvaFormatError, match=r"gt.csv:2: expected 7 or 8 .* got 5"):
        read_ava_csv(str(path), with_scores=False)
    path.write_text("v,902,0.1,0.2,0.3,0.4,1,0\nv,903,0.1,0.2,0.3,0.4,99,0\n")
    with pytest.raises(AvaFormatError, match=r"gt.csv:2: unknown action id 99"):
        read_ava_csv(str(path), with_scores=False, known_class_ids=[1, 2])


def test_command_line(tmp_path, capsys):
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3 if c != 3]
    gt, det_p, lm, ex = _files(tmp_path, GT3, det)
    out_json, out_png = tmp_path / "m.json", tmp_path / "ap.png"
    rc = main(["--groundtruth", gt, "--detections", det_p, "--labelmap", lm, "--exclusions", ex,
               "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert data["mAP"] == pytest.approx(200 / 3)
    assert data["per_class"] == {"1": 100.0, "2": 100.0, "3": 0.0}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "66.6667" in capsys.readouterr().out

    # Pixel boxes are rejected with file:line.
    with open(det_p, "a") as f:
        f.write("vidA,0902,10,20,300,400,1,0.9\n")
    assert main(["--groundtruth", gt, "--detections", det_p, "--labelmap", lm, "--json", str(out_json)]) == 2
    assert f"{det_p}:4" in capsys.readouterr().err


def test_command_line_module_entry(tmp_path):
    gt, det_p, lm, _ = _files(tmp_path, GT3, [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3])
    out_json = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "evad_d2.evaluation.ava", "--groundtruth", gt, "--detections", det_p,
         "--labelmap", lm, "--json", str(out_json)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out_json.read_text())["mAP"] == pytest.approx(100.0)


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


# ----------------------------------------------------------------------------- evaluator

H, W = 200, 400
MODEL_IDS = [4, 1, 2, 3]  # model column order differs from the id order on purpose
GT_EVAL = [("vidA", 902, A, 1, 0), ("vidA", 902, B, 2, 1), ("vidA", 902, B, 4, 1),
           ("vidA", 903, A, 4, 0), ("vidB", 902, B, 1, 0), ("vidB", 902, B, 3, 0)]


def _register(tmp_path, name):
    gt, _, lm, ex = _files(tmp_path, GT_EVAL, [], classes=(1, 2, 4))
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        action_ids=MODEL_IDS, action_classes=[f"act{i}" for i in MODEL_IDS], eval_action_ids=[1, 2, 4],
        label_map_file=lm, groundtruth_file=gt, exclusions_file=ex, evaluator_type="ava", frame_rate=30,
    )


def _fake_outputs(frames):
    """Model outputs that find every ground-truth person with the right actions."""
    inputs, outputs = [], []
    for video, ts in frames:
        people = {}
        for v, t, b, c, _ in GT_EVAL:
            if (v, t) == (video, ts):
                people.setdefault(b, set()).add(c)
        boxes = torch.tensor([[b[0] * W, b[1] * H, b[2] * W, b[3] * H] for b in people], dtype=torch.float32)
        actions = torch.tensor([[0.95 if i in acts else 0.02 for i in MODEL_IDS] for acts in people.values()])
        inst = Instances((H, W), pred_boxes=Boxes(boxes), scores=torch.full((len(people),), 0.9),
                         pred_action_scores=actions)
        inputs.append({"video_id": video, "timestamp": ts, "height": H, "width": W})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_evaluator_end_to_end(tmp_path):
    _register(tmp_path, "evad_test_ava_eval")
    out_dir = tmp_path / "out"
    ev = AVAEvaluator("evad_test_ava_eval", str(out_dir))
    ev.reset()
    inputs, outputs = _fake_outputs([("vidA", 902), ("vidA", 903), ("vidB", 902)])
    ev.process(inputs[:2], outputs[:2])
    ev.process(inputs[2:], outputs[2:])
    res = ev.evaluate()["ava"]
    assert res["frame_mAP@0.5"] == pytest.approx(100.0)
    assert res["person_AP@0.5"] == pytest.approx(100.0)
    assert set(k for k in res if k.startswith("AP-")) == {"AP-act1", "AP-act2", "AP-act4"}

    rows = [line.split(",") for line in (out_dir / "ava_detections.csv").read_text().splitlines()]
    assert len(rows) == 4 * 3  # 4 people x 3 evaluated classes; class 3 is not evaluated
    assert {int(r[6]) for r in rows} == {1, 2, 4}
    assert all(0.0 <= float(x) <= 1.0 for r in rows for x in r[2:6])
    # Box by box in the model's order (people A then B on vidA 0902), classes in eval_action_ids order.
    first_frame = [r for r in rows if r[0] == "vidA" and r[1] == "0902"]
    assert [[float(x) for x in r[2:6]] for r in first_frame] == [[0.1, 0.1, 0.4, 0.9]] * 3 + [[0.5, 0.2, 0.9, 0.8]] * 3
    assert [int(r[6]) for r in first_frame] == [1, 2, 4, 1, 2, 4]
    assert first_frame[0][2:6] == ["0.10000", "0.10000", "0.40000", "0.90000"]  # 5 decimals (see detection_rows)
    metrics = json.loads((out_dir / "ava_metrics.json").read_text())
    assert metrics["mAP"] == pytest.approx(100.0) and metrics["person_AP"] == pytest.approx(100.0)
    assert (out_dir / "ava_per_class_ap.png").read_bytes()[:4] == b"\x89PNG"
    # The written CSV gives the same number through the command line reader.
    again, _ = evaluate_ava_files(MetadataCatalog.get("evad_test_ava_eval").groundtruth_file,
                                  str(out_dir / "ava_detections.csv"), str(tmp_path / "map.pbtxt"))
    assert again.mean_ap == pytest.approx(1.0)


def test_evaluator_partial_run(tmp_path):
    _register(tmp_path, "evad_test_ava_eval_part")
    inputs, outputs = _fake_outputs([("vidA", 902)])
    results = {}
    for only in (False, True):
        ev = AVAEvaluator("evad_test_ava_eval_part", None, only_processed_keyframes=only)
        ev.reset()
        ev.process(inputs, outputs)
        results[only] = ev.evaluate()["ava"]
    assert results[True]["frame_mAP@0.5"] == pytest.approx(100.0)
    # Full protocol: act1 1/2 (vidB missed), act2 1, act4 1/2 (vidA 903 missed).
    assert results[False]["frame_mAP@0.5"] == pytest.approx(100 * (0.5 + 1 + 0.5) / 3)
    assert not os.path.exists(tmp_path / "ava_detections.csv")


def test_evaluator_metadata_errors(tmp_path):
    name = "evad_test_ava_eval_bad"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(action_ids=[1, 2], eval_action_ids=[1, 3], groundtruth_file="x.csv")
    with pytest.raises(KeyError, match=r"eval_action_ids \[3\]"):
        AVAEvaluator(name)
    MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(action_ids=[1, 2])
    with pytest.raises(KeyError, match="groundtruth_file"):
        AVAEvaluator(name)


def test_evaluator_scores_exactly_what_it_writes(tmp_path):
    """Scoring the in-memory rows equals the command line on the written CSV, to the last bit."""
    _register(tmp_path, "evad_test_ava_eval_exact")
    rng = np.random.default_rng(5)
    inputs, outputs = [], []
    for video, ts in [("vidA", 902), ("vidA", 903), ("vidB", 902), ("vidC", 950)]:
        boxes = torch.tensor([[b[0] * W, b[1] * H, b[2] * W, b[3] * H] for b in (A, B, A)], dtype=torch.float32)
        boxes += torch.from_numpy(rng.normal(0, 6, (3, 4))).float()
        actions = torch.from_numpy(rng.random((3, len(MODEL_IDS)))).float()
        actions[0, :2] = 0.5  # tied scores
        inputs.append({"video_id": video, "timestamp": ts, "height": H, "width": W})
        outputs.append({"instances": Instances((H, W), pred_boxes=Boxes(boxes), scores=torch.rand(3),
                                               pred_action_scores=actions)})
    results = {}
    for out_dir in (str(tmp_path / "out"), None):
        ev = AVAEvaluator("evad_test_ava_eval_exact", out_dir)
        ev.reset()
        ev.process(inputs, outputs)
        results[out_dir] = ev.evaluate()["ava"]
    res = results[str(tmp_path / "out")]
    assert res == results[None]
    assert 0 < res["frame_mAP@0.5"] < 100
    meta = MetadataCatalog.get("evad_test_ava_eval_exact")
    again, _ = evaluate_ava_files(meta.groundtruth_file, str(tmp_path / "out" / "ava_detections.csv"),
                                  meta.label_map_file, meta.exclusions_file)
    assert 100.0 * again.mean_ap == res["frame_mAP@0.5"]
    for c, ap in again.per_class_ap.items():
        if not math.isnan(ap):
            assert 100.0 * ap == res[f"AP-act{c}"]


# ----------------------------------------------------------------------------- issue 13: released files, protocols, ties

BOM = "\ufeff"


def test_byte_order_mark_is_read_as_nothing(tmp_path):
    """A UTF-8 BOM (what spreadsheet tools write) before the first video id of either file."""
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3]
    gt, det_p, lm, _ = _files(tmp_path, GT3, det)
    for path in (gt, det_p):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(BOM + text)
    # Read as "\ufeffvidA", the first row's frame would lose its class-1 box: AP 1/2, 1, 1.
    result, _ = evaluate_ava_files(gt, det_p, lm)
    assert result.mean_ap == 1.0
    assert read_ava_csv(gt, with_scores=False).video_names == ["vidA", "vidB"]
    # The same through the exact fallback (quoted fields go through the csv module).
    quoted = tmp_path / "quoted.csv"
    quoted.write_text(BOM + '"vidA",0902,0.1,0.1,0.4,0.9,1,0.9\n', encoding="utf-8")
    rows = read_ava_csv(str(quoted), with_scores=True)
    assert rows.video_names == ["vidA"] and rows.lines.tolist() == [1]


def test_byte_order_mark_in_exclusions(tmp_path):
    gt = [("v", 905, A, 1, 0), ("v", 902, A, 1, 0)]
    det = [("v", 902, A, 1, 0.9), ("v", 905, B, 1, 0.95)]
    gt_p, det_p, lm, ex = _files(tmp_path, gt, det, classes=(1,))
    with open(ex, "w", encoding="utf-8") as f:
        f.write(BOM + "v,0905\n")
    # 0905 excluded: TP over 1 box -> 1 (not excluded: FP 0.95 then TP 0.9 over 2 boxes -> 1/4).
    assert evaluate_ava_files(gt_p, det_p, lm, ex)[0].mean_ap == 1.0


def test_warns_when_no_detected_keyframe_is_a_groundtruth_keyframe(tmp_path, caplog, capsys):
    """Timestamps written from the clip start (0002) instead of the video start (0902)."""
    gt = [("vidA", 902, A, 1, 0), ("vidA", 903, A, 1, 0)]
    det = [("vidA", 2, A, 1, 0.9), ("vidA", 3, A, 1, 0.9)]
    gt_p, det_p, lm, _ = _files(tmp_path, gt, det, classes=(1,))
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
    _, det_p, _, _ = _files(tmp_path, gt, [("other", 902, A, 1, 0.9)], classes=(1,))
    result, _ = evaluate_ava_files(gt_p, det_p, lm)
    assert "Check that both files name videos and timestamps" in result.warnings[0]
    _, det_p, _, _ = _files(tmp_path, gt, det + [("vidA", 903, A, 1, 0.5)], classes=(1,))
    assert evaluate_ava_files(gt_p, det_p, lm)[0].warnings == []


def test_activitynet_ignores_detections_on_frames_the_groundtruth_does_not_list(tmp_path):
    """Issue 13's minimal case: ActivityNet's script gives 100, PySlowFast's 50 (both run beside ours)."""
    gt = [("v", 902, (0.1, 0.1, 0.5, 0.5), 1, 0)]
    det = [("v", 902, (0.1, 0.1, 0.5, 0.5), 1, 0.5), ("v", 903, (0.1, 0.1, 0.5, 0.5), 1, 0.9)]
    # PySlowFast: FP (0.9, frame 0903) then TP (0.5): precision 1/2 at recall 1.
    assert _evaluate(tmp_path, gt, det, classes=(1,), protocol="pyslowfast").mean_ap == 0.5
    assert _evaluate(tmp_path, gt, det, classes=(1,), protocol="activitynet").mean_ap == 1.0
    # A frame is listed by a row of a class outside the label map, or by a two-column row: then
    # its detections are false positives under ActivityNet's protocol too.
    for listing in ("v,0903,0.1,0.1,0.5,0.5,7,0\n", "v,0903\n", "v,903\n"):
        gt_p, det_p, lm, _ = _files(tmp_path, gt, det, classes=(1,))
        with open(gt_p, "a") as f:
            f.write(listing)
        assert evaluate_ava_files(gt_p, det_p, lm, protocol="activitynet")[0].mean_ap == 0.5, listing


def test_reader_lists_every_frame_of_the_file(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("v,0902,0.1,0.1,0.5,0.5,1,0\nw,0950\nv,0903,0.1,0.1,0.5,0.5,7,0\nv,0902,0.1,0.1,0.5,0.5,2,0\n")
    rows = read_ava_csv(str(path), with_scores=False, class_whitelist=[1, 2])
    assert rows.labels.tolist() == [1, 2] and rows.video_names == ["v", "w"]
    # (video index, timestamp): v 902 and 903 (a class-7 row), w 950 (a two-column row).
    assert rows.frames.tolist() == [[0, 902], [0, 903], [1, 950]]
    assert rows.select(np.array([False, True])).frames.tolist() == rows.frames.tolist()
    assert AvaBoxes.from_rows([("v", 902, *A, 1), ("v", 902, *B, 1)]).frames.tolist() == [[0, 902]]
    path.write_text("v,0902,0.1,0.1,0.5,0.5,1,0\nw,95.5\n")
    with pytest.raises(AvaFormatError, match=r"gt.csv:2: timestamp 95.5 must be a non-negative whole second"):
        read_ava_csv(str(path), with_scores=False)


def test_person_ap_ranks_tied_detections_in_matching_order():
    """One person, two identical detections at 0.9: the copy that took the box is ranked first."""
    ap = evaluate_person_ap([("v", 1)], np.array([A]), [("v", 1), ("v", 1)], np.array([A, A]), np.array([0.9, 0.9]))
    assert ap == 1.0  # TP then FP: precision 1 at recall 1 (ranked FP first it would be 1/2)
    # A tie between a false positive (frame 2, no people) and a true positive: given order.
    ap = evaluate_person_ap([("v", 1)], np.array([A]), [("v", 2), ("v", 1)], np.array([A, A]), np.array([0.9, 0.9]))
    assert ap == 0.5


def test_command_line_help_tells_the_protocols_apart(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "ava_eval_helper.py" in out and "get_ava_performance.py" in out
    assert "ava_action_list_v2.2_for_activitynet_2019.pbtxt" in out
    assert "the 50 highest-scored rows" in out and "ignored (a frame is listed by any" in out


def test_evaluator_person_ap_with_tied_duplicate_boxes(tmp_path):
    """The person predicted twice with one score: TP then FP, person AP 100 (ranked FP first: 50)."""
    _register(tmp_path, "evad_test_ava_eval_ties")
    inputs, outputs = _fake_outputs([("vidA", 903)])  # one person (box A)
    inst = outputs[0]["instances"]
    twice = Instances(inst.image_size, pred_boxes=Boxes(torch.cat([inst.pred_boxes.tensor] * 2)),
                      scores=torch.cat([inst.scores] * 2), pred_action_scores=torch.cat([inst.pred_action_scores] * 2))
    ev = AVAEvaluator("evad_test_ava_eval_ties", None, only_processed_keyframes=True)
    ev.reset()
    ev.process(inputs, [{"instances": twice}])
    assert ev.evaluate()["ava"]["person_AP@0.5"] == 100.0


def test_streaming_writer_writes_the_text_of_detection_rows(tmp_path):
    """One spec: DetectionCsvWriter keyframe by keyframe = detection_rows(row_order="box") at once."""
    rng = np.random.default_rng(5)
    ids = [4, 1, 12]
    frames = [("vidA", 902, 2), ("vidB", 7, 0), ("-5KQ66BBWC4", 1800, 3)]
    boxes = rng.random((5, 4))
    boxes[0] = [0.0625, 0.1875, 1.0, 0.5]  # exact rounding ties
    scores = rng.random((5, 3))
    buf = io.BytesIO()
    detection_rows([f[0] for f in frames], [f[1] for f in frames], [f[2] for f in frames], boxes, scores, ids,
                   row_order="box", out=buf)
    text = io.StringIO()
    writer, b0 = DetectionCsvWriter(text, ids), 0
    for video, ts, n in frames:
        writer.write(video, ts, boxes[b0:b0 + n], scores[b0:b0 + n])
        b0 += n
    assert text.getvalue() == buf.getvalue().decode() and writer.num_rows == 15
    assert text.getvalue().startswith("vidA,0902,0.06250,0.18750,1.00000,0.50000,4,")


def test_detection_rows_in_box_order():
    rows = detection_rows(["v", "w"], [902, 903], [2, 1], np.array([A, B, A]),
                          np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.4]]), [5, 2], row_order="box")
    assert rows.scores.tolist() == [0.1, 0.9, 0.8, 0.2, 0.3, 0.4]
    assert rows.labels.tolist() == [5, 2, 5, 2, 5, 2]
    assert rows.boxes.tolist() == [list(A), list(A), list(B), list(B), list(A), list(A)]
    with pytest.raises(ValueError, match="row_order"):
        detection_rows(["v"], [902], [1], np.array([A]), np.array([[0.5, 0.5]]), [5, 2], row_order="class")


def test_evaluator_matches_a_frame_in_model_box_order(tmp_path):
    """Two predictions of one person: the first in the model's order (score 0.3) takes the box,
    as in EVAD's own evaluation (PySlowFast's code on get_ava_eval_data's box-by-box rows)."""
    _register(tmp_path, "evad_test_ava_eval_box_order")
    box_a = [A[0] * W, A[1] * H, A[2] * W, A[3] * H]
    inst = Instances((H, W), pred_boxes=Boxes(torch.tensor([box_a, box_a])), scores=torch.tensor([0.9, 0.9]),
                     pred_action_scores=torch.tensor([[0.25, 0.0, 0.0, 0.0], [0.75, 0.0, 0.0, 0.0]]))  # column 0: id 4
    inputs = [{"video_id": "vidA", "timestamp": 903, "height": H, "width": W}]  # GT: person A, action 4
    results = {}
    for protocol in ("pyslowfast", "activitynet"):
        ev = AVAEvaluator("evad_test_ava_eval_box_order", None, only_processed_keyframes=True, protocol=protocol)
        ev.reset()
        ev.process(inputs, [{"instances": inst}])
        results[protocol] = ev.evaluate()["ava"]["AP-act4"]
    # PySlowFast: TP at 0.25, FP at 0.75 -> ranked FP, TP: 1/2. ActivityNet matches by score: 1.
    assert results == {"pyslowfast": 50.0, "activitynet": 100.0}


def test_command_line_json_is_written_atomically(tmp_path, monkeypatch):
    gt, det_p, lm, _ = _files(tmp_path, GT3, [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3])
    out_json = tmp_path / "m.json"
    out_json.write_text("old")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ava_cli.json, "dump", fail)
    with pytest.raises(KeyboardInterrupt):
        main(["-g", gt, "-d", det_p, "-l", lm, "--json", str(out_json)])
    assert out_json.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    assert main(["-g", gt, "-d", det_p, "-l", lm, "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["mAP"] == 100.0


def test_warns_when_groundtruth_has_no_evaluated_class(tmp_path):
    r = _evaluate(tmp_path, [("v", 902, A, 7, 0)], [("v", 902, A, 1, 0.9)], classes=(1, 2))
    assert math.isnan(r.mean_ap)
    assert r.warnings == [
        "the ground truth has no rows of the 2 evaluated classes (ids 1, 2) outside excluded keyframes, so "
        "the frame-mAP is undefined (nan); check the ground-truth file and that the label map is the one it was "
        "written with"
    ]


def test_evaluation_reads_both_released_label_map_forms(tmp_path):
    """AVA's own action list (label { name label_id label_type }) and ActivityNet's (item { name id })."""
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3 if c != 3]
    gt, det_p, _, _ = _files(tmp_path, GT3, det)
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
