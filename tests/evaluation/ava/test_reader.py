"""The AVA CSV reader (evaluation/ava/reader.py): values like float(), line numbers, listed frames, errors."""
import csv
import io
import re

import numpy as np
import pytest

from evad_d2.data.formats.ava import AvaFormatError
from evad_d2.evaluation.ava import reader as ava_reader
from evad_d2.evaluation.ava import (
    AvaBoxes,
    evaluate_ava_files,
    read_ava_csv,
)
from evad_d2.testing import BOM, AVA_GT3 as GT3, AVA_BOX_A as A, AVA_BOX_B as B, write_ava_files


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


def test_byte_order_mark_is_read_as_nothing(tmp_path):
    """A UTF-8 BOM (what spreadsheet tools write) before the first video id of either file."""
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3]
    gt, det_p, lm, _ = write_ava_files(tmp_path, GT3, det)
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


@pytest.mark.parametrize("with_scores", [True, False])
def test_fast_and_exact_paths_read_the_same_rows(tmp_path, monkeypatch, with_scores):
    """pyarrow's path on a clean file equals the exact reader, which a blank line in the middle selects."""
    rng = np.random.default_rng(8)
    layouts = ["%.3f", "%.6f", "%r", "%g", "%.1f"]
    lines = []
    for i in range(500):
        x1, y1 = rng.random(2) / 2
        lay = layouts[i % len(layouts)]
        fields = [f"vid{int(rng.integers(0, 7))}", "%04d" % rng.integers(0, 2000)]
        fields += [lay % c for c in (x1, y1, x1 + rng.random() / 2, y1 + rng.random() / 2)]
        fields += [str(int(rng.integers(1, 81))), "%r" % rng.random() if with_scores else str(int(rng.integers(0, 9)))]
        lines.append(",".join(fields))
    clean, mixed = tmp_path / "clean.csv", tmp_path / "mixed.csv"
    clean.write_text("\n".join(lines) + "\n")
    mixed.write_text("\n".join(lines[:250] + [""] + lines[250:]) + "\n")
    paths = []
    real = ava_reader._read_fast
    monkeypatch.setattr(ava_reader, "_read_fast", lambda data, *a: paths.append(real(data, *a) is not None) or real(data, *a))
    kw = dict(with_scores=with_scores, class_whitelist=range(1, 41))
    fast, exact = ava_reader.read_ava_csv(str(clean), **kw), ava_reader.read_ava_csv(str(mixed), **kw)
    assert paths == [True, False]
    assert fast.video_names == exact.video_names
    for name in ("video", "timestamp", "boxes", "labels", "scores", "frames"):
        assert np.array_equal(getattr(fast, name), getattr(exact, name)), name
    assert np.array_equal(fast.lines + (fast.lines > 250), exact.lines)
    rows = _brute_force_read(clean.read_text(), with_scores)
    _assert_rows_equal(fast, [r for r in rows if 1 <= r[3] <= 40])
