"""Shared by the AVA evaluation tests: two boxes, a small ground truth, and files written from rows."""


from evad_d2.evaluation.ava import (
    evaluate_ava_files,
)



A = (0.1, 0.1, 0.4, 0.9)


B = (0.5, 0.2, 0.9, 0.8)


def write_files(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=()):
    lm = tmp_path / "map.pbtxt"
    lm.write_text("".join(f'item {{\n  name: "act{c}"\n  id: {c}\n}}\n' for c in classes))
    gt = tmp_path / "gt.csv"
    gt.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{p}\n" for v, t, b, c, p in gt_rows))
    det = tmp_path / "det.csv"
    det.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{s}\n" for v, t, b, c, s in det_rows))
    ex = tmp_path / "ex.csv"
    ex.write_text("".join(f"{v},{t:04d}\n" for v, t in exclusions))
    return str(gt), str(det), str(lm), str(ex)


def evaluate_rows(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=(), protocol="pyslowfast"):
    gt, det, lm, ex = write_files(tmp_path, gt_rows, det_rows, classes, exclusions)
    result, _ = evaluate_ava_files(gt, det, lm, ex, protocol=protocol)
    return result


GT3 = [("vidA", 902, A, 1, 0), ("vidA", 902, A, 2, 0), ("vidA", 903, B, 3, 1), ("vidB", 1000, B, 1, 0)]


BOM = "\ufeff"
