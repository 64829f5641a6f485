"""AVA CSV rows (evad_d2/data/formats/ava.py): one validator, its policies, frame lists."""
import pytest

from evad_d2.data.formats.ava import (
    ROW_POLICIES,
    AvaFormatError,
    AvaRow,
    AvaSource,
    iter_ava_rows,
    iter_ava_rows_or_errors,
    iter_frame_list,
    parse_ava_row,
)


def test_row_parser_agrees_with_iter_ava_rows_and_frame_lists(tmp_path):
    rows = [
        "v,0902,0.1,0.2,0.5,0.9,1,3",
        "v,0902,0.1,0.2,0.5,0.9,1",
        "v,0902,0.1,0.2,0.5",
        "v,0902,0.1,0.2,0.5,0.9,9,3",
        "v,0902,-0.2,0.2,0.5,0.9,1,3",
        "v,x,0.1,0.2,0.5,0.9,1,3",
        "v,0903,0.0,0.0,1.0005,1.0,2,0.5",
    ]
    label_map = {1: "a", 2: "b"}
    lenient = []
    for k, row in enumerate(rows):
        p = tmp_path / f"r{k}.csv"
        p.write_text("v,0901,0.1,0.1,0.2,0.2,1,0\n" + row + "\n")
        try:
            strict = list(iter_ava_rows(str(p), label_map=label_map))[1]
        except AvaFormatError as e:
            strict = str(e)
        got = list(iter_ava_rows_or_errors(str(p), label_map=label_map))[1]
        lenient.append(got)
        assert (got if isinstance(got, AvaRow) else str(got)) == strict
    assert [isinstance(g, AvaRow) for g in lenient] == [True, True, False, False, False, False, True]
    assert lenient[6].box == (0.0, 0.0, 1.0, 1.0)

    fl = tmp_path / "train.csv"
    fl.write_text('original_vido_id video_idx frame_id path labels\nv 0 0 v/v_000001.jpg ""\nv 0 x v/v_000002.jpg ""\nv 0 2\n')
    items = list(iter_frame_list(str(fl)))
    assert items[0].frame_id == 0 and items[0].path == "v/v_000001.jpg" and items[0].line == 2
    assert str(items[1]).startswith(f"{fl}:3: video_idx and frame_id must be integers")
    assert str(items[2]).startswith(f"{fl}:4: expected 5 space-separated columns")


@pytest.mark.parametrize(
    "row, annotations, proposals, groundtruth, detections",
    [
        # Rounded a little outside the frame: clipped for training, kept as read for the evaluation.
        ("v,0902,-0.0005,0.1,0.5,1.0005,1,0.5", (0.0, 0.1, 0.5, 1.0), (0.0, 0.1, 0.5, 1.0),
         (-0.0005, 0.1, 0.5, 1.0005), (-0.0005, 0.1, 0.5, 1.0005)),
        # No width: an error for training targets and ground truth's x2 < x1 only; detections kept.
        ("v,0902,0.5,0.1,0.5,0.9,1,0.5", "empty box", "empty box", (0.5, 0.1, 0.5, 0.9), (0.5, 0.1, 0.5, 0.9)),
        ("v,0902,0.6,0.1,0.5,0.9,1,0.5", "empty box", "empty box", "has x2 < x1", (0.6, 0.1, 0.5, 0.9)),
        # An empty action column: only proposal files may have one.
        ("v,0902,0.1,0.1,0.5,0.9,,0.5", "action id '' is not a number", (0.1, 0.1, 0.5, 0.9),
         "action id '' is not a number", "action id '' is not a number"),
        # 7 columns: detections need the score.
        ("v,0902,0.1,0.1,0.5,0.9,1", (0.1, 0.1, 0.5, 0.9), (0.1, 0.1, 0.5, 0.9), (0.1, 0.1, 0.5, 0.9),
         "expected 8 columns"),
    ],
)
def test_row_policies_differ_only_as_their_table_says(tmp_path, row, annotations, proposals, groundtruth, detections):
    path = tmp_path / "rows.csv"
    path.write_text(row + "\n")
    for policy, expected in zip(ROW_POLICIES, (annotations, proposals, groundtruth, detections)):
        source = AvaSource(str(path), policy)
        if isinstance(expected, str):
            with pytest.raises(AvaFormatError, match=expected):
                parse_ava_row(source, 1, row.split(","))
        else:
            got = parse_ava_row(source, 1, row.split(","))
            assert got.box == expected, policy
            if len(row.split(",")) == 8:  # the 8th column is a person id or a score, as the policy says
                assert (got.person_id, got.score) == ((0.5, None) if policy in ("annotations", "groundtruth") else (None, 0.5))
