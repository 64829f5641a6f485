"""Detection rows written from model outputs (evaluation/ava/writer.py, data/formats/ava.py's text spec)."""
import io

import numpy as np
import pytest

from evad_d2.data.formats.ava import DetectionCsvWriter, round_decimals
from evad_d2.evaluation.ava import (
    detection_rows,
    read_ava_csv,
)
from evad_d2.testing import AVA_BOX_A as A, AVA_BOX_B as B


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
