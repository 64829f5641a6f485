"""The annotation checks of the doctor: class ids, class count, timestamps, exclusions, box units
and detections (each returns a list of :class:`.findings.Finding`)."""
import csv
import dataclasses
from collections import Counter
from typing import Dict, List, Optional, Tuple

from ..datasets.ava import AVA_VIDEO_START_SEC
from ..formats.ava import BOX_SLACK, TEXT_ENCODING
from .findings import Finding, RawRow, number, read_raw_rows

__all__ = [
    "check_box_units",
    "check_class_count",
    "check_class_ids",
    "check_detections",
    "check_exclusions",
    "check_timestamps",
]

# AVA v2.x: 60 of its 80 classes are evaluated.
AVA_NUM_EVAL_CLASSES = 60


def _ids_text(ids, limit: int = 8) -> str:
    ids = sorted(ids)
    return ", ".join(str(i) for i in ids[:limit]) + (f", ... ({len(ids)} ids)" if len(ids) > limit else "")


def _shift_hint(used: set, known: set) -> str:
    if used and all(i + 1 in known for i in used):
        return " They look 0-based (every id + 1 is a class): AVA's ids start at 1."
    if used and all(i - 1 in known for i in used):
        return " Every id - 1 is a class: the ids are shifted up by one."
    return ""


def check_class_ids(label_map: Dict[int, str], lm_path: str, rows: Dict[str, List[RawRow]],
                    train_path: Optional[str] = None) -> List[Finding]:
    """Action ids of the annotation rows (by file) against the model's label map; classes without
    rows in ``train_path`` are noted."""
    used = Counter(int(r.action) for rs in rows.values() for r in rs if r.action is not None and r.action == int(r.action))
    known = set(label_map)
    unknown = set(used) - known
    if unknown:
        first = next((p, r.line) for p, rs in rows.items() for r in rs if r.action is not None and int(r.action) in unknown)
        n = sum(used[i] for i in unknown)
        return [Finding(
            "class ids", "problem",
            f"{n} rows have action ids not in the label map {lm_path} (ids {_ids_text(unknown)}; first at "
            f"{first[0]}:{first[1]}); the label map has ids {_ids_text(known)}.{_shift_hint(set(used), known)} "
            "The loader rejects such rows, and an evaluation against this label map ignores them.",
            "make every action id a label_id of the label map (add 1 to 0-based ids), or fix the label map",
        )]
    findings = [Finding("class ids", "ok", f"all {len(used)} action ids used are in the label map ({len(known)} classes)")]
    train_rows = rows.get(train_path)
    unused = known - {int(r.action) for r in train_rows or [] if r.action is not None}
    if train_rows and unused:
        findings.append(Finding(
            "class ids", "note", f"classes {_ids_text(unused)} have no training rows: the model cannot learn them "
            "(their AP stays near 0)",
        ))
    return findings


def check_class_count(label_map: Dict[int, str], lm_path: str, eval_ids: Optional[List[int]],
                      num_classes: Optional[int]) -> List[Finding]:
    """The number of classes: AVA's 60-class list used as the model's, and the model's output size."""
    k = len(label_map)
    findings = []
    if k == AVA_NUM_EVAL_CLASSES and max(label_map) > AVA_NUM_EVAL_CLASSES:
        findings.append(Finding(
            "class count", "problem",
            f"{lm_path} has 60 classes with ids up to {max(label_map)}: that is AVA's evaluation list "
            "(..._for_activitynet_*.pbtxt). AVA models predict all 80 classes and are evaluated on 60; "
            "trained on the 60-class list, the head's columns do not match an 80-class checkpoint or ground truth",
            "put AVA's 80-class ava_action_list_v2.2.pbtxt in annotations/ and the 60-class list beside it as "
            "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        ))
    if num_classes is not None and num_classes != k:
        findings.append(Finding(
            "class count", "problem",
            f"the model predicts {num_classes} classes (MODEL.EVAD.NUM_ACTION_CLASSES) but the label map has {k}: "
            "training refuses the dataset, and scores of another class order are evaluated against the wrong classes",
            f"set MODEL.EVAD.NUM_ACTION_CLASSES {k}; to fine-tune a checkpoint trained on other classes add "
            "MODEL.EVAD.CHECKPOINT.NEW_ACTION_CLASSES True",
        ))
    if not findings:
        evaluated = f", {len(eval_ids)} evaluated" if eval_ids is not None and len(eval_ids) != k else ""
        findings.append(Finding("class count", "ok", f"{k} classes{evaluated}" + (
            f"; the model predicts {num_classes}" if num_classes is not None else "")))
    return findings


def check_timestamps(rows: Dict[str, List[RawRow]], start: float = AVA_VIDEO_START_SEC) -> List[Finding]:
    """Timestamps: the +900 convention and whole seconds."""
    stamps = [(p, r) for p, rs in rows.items() for r in rs if r.timestamp is not None]
    if not stamps:
        return []
    low = [(p, r) for p, r in stamps if r.timestamp < start]
    fractional = [(p, r) for p, r in stamps if r.timestamp != int(r.timestamp)]
    values = [r.timestamp for _, r in stamps]
    findings = []
    if low:
        p, r = low[0]
        every = "every timestamp is" if len(low) == len(stamps) else f"{len(low)} of {len(stamps)} timestamps are"
        findings.append(Finding(
            "timestamps", "problem",
            f"{every} below {start:g} (first {r.timestamp:g} at {p}:{r.line}): they look like seconds from the start of "
            f"the video without AVA's +{start:g} offset. The loader takes timestamp t as frame (t - {start:g}) * 30, "
            "before the start of the video",
            f"add {start:g} to the timestamps (tools/convert_cvat.py --time-offset {start:g} does), or register the "
            "dataset with register_ava(..., video_start_sec=0)",
        ))
    if fractional:
        p, r = fractional[0]
        findings.append(Finding(
            "timestamps", "problem", f"{len(fractional)} timestamps are not whole seconds (first {r.timestamp:g} at "
            f"{p}:{r.line}); AVA keyframes are whole seconds", "round keyframes to whole seconds (one per second)",
        ))
    if not findings:
        findings.append(Finding("timestamps", "ok", f"timestamps {min(values):g}..{max(values):g} (the +{start:g} convention)"))
    return findings


def _read_exclusion_keys(path: str) -> List[Tuple[str, Optional[float]]]:
    with open(path, encoding=TEXT_ENCODING, newline="") as f:
        return [(row[0], number(row[1])) for row in csv.reader(f) if len(row) >= 2]


def check_exclusions(rows: Dict[str, List[RawRow]], exclusion_files: Dict[str, str]) -> List[Finding]:
    """Excluded timestamps that hit annotated keyframes, or miss every keyframe by an offset."""
    findings = []
    for path, gt_path in exclusion_files.items():
        keys = _read_exclusion_keys(path)
        keyframes = {(r.video_id, r.timestamp) for r in rows.get(gt_path, []) if r.timestamp is not None}
        hit = keyframes & set(keys)
        gt_low = any(t < AVA_VIDEO_START_SEC for _, t in keyframes)
        ex_low = any(t is not None and t < AVA_VIDEO_START_SEC for _, t in keys)
        if keys and keyframes and not hit and gt_low != ex_low:
            findings.append(Finding(
                "exclusions", "problem", f"{path}: the excluded timestamps and {gt_path} use different time offsets "
                "(one below 900, one not): no exclusion matches a keyframe, so excluded keyframes are trained on and scored",
                "write both with the same convention (AVA: +900)",
            ))
        elif keyframes and len(hit) > len(keyframes) / 2:
            findings.append(Finding(
                "exclusions", "problem", f"{len(hit)} of the {len(keyframes)} annotated keyframes of {gt_path} are listed in "
                f"{path}: excluded keyframes are dropped from training and ignored by the evaluation (all excluded: mAP 0)",
                "list only keyframes that could not be annotated (AVA's exclusions have no annotation rows)",
            ))
        elif hit:
            findings.append(Finding(
                "exclusions", "note", f"{len(hit)} annotated keyframes of {gt_path} are excluded by {path} "
                "(dropped from training, ignored by the evaluation)",
            ))
        else:
            findings.append(Finding("exclusions", "ok", f"{len(keys)} excluded timestamps in {path}, none annotated"))
    return findings


def check_box_units(rows: Dict[str, List[RawRow]], sizes: Dict[str, Tuple[int, int]],
                    check_corners: bool = True) -> List[Finding]:
    """Boxes: normalised corners, not pixels and (with ``check_corners``) not (x, y, width, height).

    Args:
        rows: raw rows by file.
        sizes: ``video_id -> (width, height)`` where known (to recognise pixel boxes).
        check_corners: also flag files where a quarter of the boxes have x2 <= x1 or y2 <= y1
            (off for detections: a poor model's boxes may be degenerate).
    """
    boxes = [(p, r) for p, rs in rows.items() for r in rs if r.box is not None]
    if not boxes:
        return []
    big = [(p, r) for p, r in boxes if max(r.box) > 1.0 + BOX_SLACK]
    if big:
        p, r = big[0]
        fits = [sizes.get(r2.video_id) for _, r2 in big]
        in_frame = all(s is not None and max(b.box[0], b.box[2]) <= s[0] + 1 and max(b.box[1], b.box[3]) <= s[1] + 1
                       for s, (_, b) in zip(fits, big))
        size = sizes.get(r.video_id)
        looks = f"pixels of the {size[0]}x{size[1]} frames" if in_frame and size else "pixels"
        return [Finding(
            "box units", "problem",
            f"{len(big)} of {len(boxes)} boxes have coordinates above 1 (first {list(r.box)} at {p}:{r.line}): they look "
            f"like {looks}. AVA boxes are normalised to [0, 1]; the loader rejects these rows",
            "divide x1, x2 by the frame width and y1, y2 by its height (tools/convert_cvat.py normalises by CVAT's "
            "original size)",
        )]
    inverted = [(p, r) for p, r in boxes if r.box[2] <= r.box[0] or r.box[3] <= r.box[1]]
    if check_corners and inverted and len(inverted) >= len(boxes) / 4:
        p, r = inverted[0]
        return [Finding(
            "box units", "problem",
            f"{len(inverted)} of {len(boxes)} boxes have x2 <= x1 or y2 <= y1 (first {list(r.box)} at {p}:{r.line}): they "
            "look like (x, y, width, height); AVA boxes are corners (x1, y1, x2, y2)",
            "write x2 = x + width and y2 = y + height",
        )]
    return [Finding("box units", "ok", f"{len(boxes)} boxes, corners normalised to [0, 1]")]


def check_detections(det_path: str, label_map: Dict[int, str], eval_ids: Optional[List[int]],
                     gt_rows: List[RawRow]) -> List[Finding]:
    """A detections CSV (``ava_detections.csv``) against the label maps and the ground truth."""
    dets = read_raw_rows(det_path)
    if not dets:
        return [Finding("detections", "problem", f"{det_path} has no rows: the model detected nobody (every AP is 0)",
                        "lower MODEL.EVAD.LOC.SCORE_THRESH_TEST, or train longer")]
    findings = []
    used = {int(r.action) for r in dets if r.action is not None}
    for name, known in (("label map", set(label_map)), ("evaluated classes", set(eval_ids or label_map))):
        unknown = used - known
        if unknown and not (name == "evaluated classes" and used & known):
            findings.append(Finding(
                "detections", "problem", f"{det_path}: class ids {_ids_text(unknown)} are not in the {name} "
                f"({_ids_text(known)}).{_shift_hint(used, known)} Detections of other ids score nothing",
                "write the label map's ids (the evaluator maps score column i to action_ids[i])",
            ))
            break
    gt_keys = {(r.video_id, r.timestamp) for r in gt_rows if r.timestamp is not None}
    det_keys = {(r.video_id, r.timestamp) for r in dets if r.timestamp is not None}
    if gt_keys and not det_keys & gt_keys:
        example = sorted(det_keys)[0] if det_keys else None
        findings.append(Finding(
            "detections", "problem", f"{det_path}: no detection is on a ground-truth keyframe (e.g. detection "
            f"{example}, ground truth {sorted(gt_keys)[0]}): video ids or timestamps differ",
            "detect on the ground truth's videos and write its timestamps (the +900 convention)",
        ))
    findings += [dataclasses.replace(f, check="detections") for f in check_box_units({det_path: dets}, {}, check_corners=False)
                 if f.status == "problem"]
    if not findings:
        findings.append(Finding("detections", "ok", f"{len(dets)} detections on {len(det_keys & gt_keys)} of the "
                                f"{len(gt_keys)} ground-truth keyframes, class ids in the label map"))
    return findings
