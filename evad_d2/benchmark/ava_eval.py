"""Time the AVA frame-mAP evaluation at AVA v2.2 validation size, on one CPU core.

Generates ground truth for ~57k keyframes (64 videos x 900 s, 1-4 people per keyframe, 1-3 of
the 60 evaluated actions plus some of the other 20 per person) and detection files with a
given number of boxes per keyframe, each with a score for all 60 classes (what a thresholded
detector writes: ~3 boxes per keyframe at person score 0.7; a heavier case keeps more boxes).
Files go to a temporary folder. For each case it times reading both CSVs and scoring them
(the command line's work); generating the files is timed apart and not counted. With
``--evaluator`` it also times ``AVAEvaluator.evaluate`` on model outputs of the same size
(writing ava_detections.csv, scoring, person AP) and checks that the command line on the
written file gives the same mAP. Wall and CPU seconds are reported with the load average,
since a shared machine slows wall time down.

    python tools/benchmark_ava_eval.py --boxes 3 10 --evaluator --json benchmark_ava_eval.json

(the command line of :func:`run_benchmark`).
"""
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from evad_d2.data.formats.ava import read_exclusions
from evad_d2.evaluation.ava import evaluate_ava_files, evaluate_frame_map, read_ava_csv

__all__ = ["AVA_EVAL_IDS", "Clock", "run_benchmark", "results_table", "time_files", "time_evaluator"]

# The 60 evaluated AVA v2.2 classes (ids of ava_action_list_v2.2_for_activitynet_2019.pbtxt).
AVA_EVAL_IDS = [
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36,
    37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66,
    67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
]


def make_groundtruth(rng, num_videos, seconds):
    """Ground truth of ``num_videos`` x ``seconds`` keyframes: (video, timestamp) of each row, boxes,
    labels and person ids (1-4 people, 1-3 evaluated actions each, some non-evaluated ones)."""
    frames, boxes, labels, pids = [], [], [], []
    for v in range(num_videos):
        for t in range(902, 902 + seconds):
            for p in range(int(rng.integers(1, 5))):
                x1, y1 = rng.uniform(0, 0.7, 2)
                b = np.round([x1, y1, x1 + rng.uniform(0.1, 0.3), y1 + rng.uniform(0.2, 0.3)], 3)
                acts = set(rng.choice(AVA_EVAL_IDS, int(rng.integers(1, 4)), replace=False).tolist())
                if rng.random() < 0.3:
                    acts.add(int(rng.choice([2, 16, 18, 19, 21, 23, 25])))  # a non-evaluated class
                for a in sorted(acts):
                    frames.append((v, t))
                    boxes.append(b)
                    labels.append(a)
                    pids.append(p)
    return frames, np.array(boxes), np.array(labels), np.array(pids)


def write_groundtruth(path, frames, boxes, labels, pids):
    """The rows of :func:`make_groundtruth` as an AVA CSV (3 box decimals, as AVA's files)."""
    with open(path, "w") as f:
        f.writelines(
            f"video{v:06d},{t:04d},{b[0]:.3f},{b[1]:.3f},{b[2]:.3f},{b[3]:.3f},{a},{p}\n"
            for (v, t), b, a, p in zip(frames, boxes.tolist(), labels.tolist(), pids.tolist())
        )


def write_detections(path, rng, gt_frames, gt_boxes, boxes_per_frame):
    """One row per (box, class); boxes are jittered ground-truth people plus spurious boxes."""
    by_frame = {}
    for fr, b in zip(gt_frames, gt_boxes.tolist()):
        by_frame.setdefault(fr, [])
        if b not in by_frame[fr]:
            by_frame[fr].append(b)
    cls = [f",{c}," for c in AVA_EVAL_IDS]
    score_txt = [f"{i / 10000:.4f}\n" for i in range(10001)]
    rows = 0
    with open(path, "w") as f:
        for (v, t), people in by_frame.items():
            prefix = f"video{v:06d},{t:04d},"
            dets = []
            for k in range(boxes_per_frame):
                if k < len(people):
                    b = np.clip(np.array(people[k]) + rng.normal(0, 0.02, 4), 0, 1)
                else:
                    x1, y1 = rng.uniform(0, 0.7, 2)
                    b = np.array([x1, y1, x1 + 0.2, y1 + 0.25])
                b[2:] = np.maximum(b[2:], b[:2] + 0.01)
                dets.append(prefix + "{:.3f},{:.3f},{:.3f},{:.3f}".format(*np.clip(b, 0, 1)))
            scores = rng.integers(0, 10001, (len(dets), len(cls)))
            f.write("".join(d + c + score_txt[s] for d, srow in zip(dets, scores.tolist()) for c, s in zip(cls, srow)))
            rows += len(dets) * len(cls)
    return rows


class Clock:
    """Wall and CPU seconds of a block: ``with Clock() as c: ...`` then ``c.wall``, ``c.cpu``."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def write_labelmap(path):
    """The 60 evaluated classes as an ActivityNet-form label map."""
    with open(path, "w") as f:
        f.writelines(f'item {{\n  name: "action{i}"\n  id: {i}\n}}\n' for i in AVA_EVAL_IDS)


def time_files(gt_path, det_path, excluded, protocol):
    """Read both CSVs and score them; returns timings and the mAP."""
    with Clock() as read:
        gt = read_ava_csv(gt_path, with_scores=False, class_whitelist=AVA_EVAL_IDS)
        det = read_ava_csv(det_path, with_scores=True, class_whitelist=AVA_EVAL_IDS)
    with Clock() as score:
        res = evaluate_frame_map(gt, det, AVA_EVAL_IDS, excluded=excluded, protocol=protocol)
    return dict(
        read_s=round(read.wall, 2), score_s=round(score.wall, 2), total_s=round(read.wall + score.wall, 2),
        read_cpu_s=round(read.cpu, 2), score_cpu_s=round(score.cpu, 2), total_cpu_s=round(read.cpu + score.cpu, 2),
        mAP=100 * res.mean_ap,
    )


def time_evaluator(d, gt_path, labelmap_path, ex_path, rng, gt_frames, gt_boxes, boxes_per_frame):
    """AVAEvaluator.evaluate on model outputs with boxes_per_frame boxes per keyframe."""
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from evad_d2.evaluation.ava.evaluator import AVAEvaluator

    torch.set_num_threads(1)
    name = "evad_benchmark_ava_eval"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        action_ids=AVA_EVAL_IDS, eval_action_ids=AVA_EVAL_IDS, action_classes=[f"action{i}" for i in AVA_EVAL_IDS],
        groundtruth_file=gt_path, exclusions_file=ex_path, label_map_file=labelmap_path, evaluator_type="ava",
    )
    out_dir = os.path.join(d, f"evaluator_{boxes_per_frame}")
    evaluator = AVAEvaluator(name, out_dir, distributed=False)
    evaluator.reset()
    h, w = 360, 640
    people = {}
    for fr, b in zip(gt_frames, gt_boxes.tolist()):
        people.setdefault(fr, [])
        if b not in people[fr]:
            people[fr].append(b)
    scale = np.array([w, h, w, h])
    t0 = time.perf_counter()
    for (v, t), boxes in people.items():
        b = np.array([boxes[k] if k < len(boxes) else [0.1, 0.1, 0.4, 0.6] for k in range(boxes_per_frame)])
        b = np.clip(b + rng.normal(0, 0.02, b.shape), 0, 1)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.01)
        inst = Instances(
            (h, w), pred_boxes=Boxes(torch.from_numpy(b * scale).float()),
            scores=torch.rand(boxes_per_frame), pred_action_scores=torch.rand(boxes_per_frame, len(AVA_EVAL_IDS)),
        )
        evaluator.process([{"video_id": f"video{v:06d}", "timestamp": t, "height": h, "width": w}],
                          [{"instances": inst}])
    process_s = time.perf_counter() - t0
    with Clock() as ev:
        res = evaluator.evaluate()["ava"]
    csv_path = os.path.join(out_dir, "ava_detections.csv")
    with Clock() as cli:
        again, _ = evaluate_ava_files(gt_path, csv_path, labelmap_path, ex_path)
    return dict(
        boxes_per_keyframe=boxes_per_frame, keyframes=len(people), detection_rows=len(people) * boxes_per_frame * 60,
        file_mib=round(os.path.getsize(csv_path) / 2**20, 1), process_s=round(process_s, 2),
        evaluate_s=round(ev.wall, 2), evaluate_cpu_s=round(ev.cpu, 2),
        cli_on_written_csv_s=round(cli.wall, 2), mAP=res["frame_mAP@0.5"], person_AP=res["person_AP@0.5"],
        cli_mAP=100 * again.mean_ap, cli_equal=100 * again.mean_ap == res["frame_mAP@0.5"],
    )


def run_benchmark(*, videos: int, seconds: int, boxes: Sequence[int], protocols: Sequence[str], evaluator: bool,
                  tmpdir: Optional[str] = None, seed: int = 0, log: Callable[[str], None] = print) -> Dict:
    """Generate the files in a temporary folder and time each case (see the module docstring).

    Returns:
        ``{"groundtruth_generate_s", "results": [per (boxes, protocol)], "evaluator": [per boxes]}``.
    """
    rng = np.random.default_rng(seed)
    results, evaluator_results = [], []
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        gt_path, ex_path, lm_path = (os.path.join(d, n) for n in ("gt.csv", "excluded.csv", "labelmap.pbtxt"))
        t0 = time.perf_counter()
        frames, gt_boxes, labels, pids = make_groundtruth(rng, videos, seconds)
        write_groundtruth(gt_path, frames, gt_boxes, labels, pids)
        excluded_frames = sorted({frames[i] for i in rng.choice(len(frames), 200)})
        with open(ex_path, "w") as f:
            f.writelines(f"video{v:06d},{t:04d}\n" for v, t in excluded_frames)
        write_labelmap(lm_path)
        excluded = read_exclusions(ex_path)
        gt_gen_s = time.perf_counter() - t0
        log(f"ground truth: {len(set(frames))} keyframes, {len(frames)} rows, generated in {gt_gen_s:.1f}s (not counted)")
        for nb in boxes:
            det_path = os.path.join(d, f"det_{nb}.csv")
            t0 = time.perf_counter()
            rows = write_detections(det_path, rng, frames, gt_boxes, nb)
            gen_s = time.perf_counter() - t0
            size_mb = os.path.getsize(det_path) / 2**20
            log(f"{nb} boxes/keyframe: {rows} detection rows ({size_mb:.0f} MiB) generated in {gen_s:.1f}s (not counted)")
            for protocol in protocols:
                r = time_files(gt_path, det_path, excluded, protocol)
                r.update(boxes_per_keyframe=nb, protocol=protocol, keyframes=len(set(frames)), gt_rows=len(frames),
                         detection_rows=rows, file_mib=round(size_mb, 1), generate_s=round(gen_s, 2))
                results.append(r)
                log(f"  {protocol:<12} read {r['read_s']:6.2f}s  score {r['score_s']:6.2f}s  total {r['total_s']:6.2f}s"
                    f"  (CPU {r['read_cpu_s']:.2f} + {r['score_cpu_s']:.2f} = {r['total_cpu_s']:.2f}s; mAP {r['mAP']:.2f})")
            os.remove(det_path)
            if evaluator:
                r = time_evaluator(d, gt_path, lm_path, ex_path, rng, frames, gt_boxes, nb)
                evaluator_results.append(r)
                log(f"  AVAEvaluator.evaluate {r['evaluate_s']:6.2f}s (CPU {r['evaluate_cpu_s']:.2f}s) for "
                    f"{r['detection_rows']} rows, {r['file_mib']:.0f} MiB written; mAP {r['mAP']:.4f}, command line "
                    f"on the written CSV {r['cli_mAP']:.4f} ({'identical' if r['cli_equal'] else 'DIFFERENT'})")
    return dict(groundtruth_generate_s=round(gt_gen_s, 2), results=results, evaluator=evaluator_results)


def results_table(results: List[Dict]) -> str:
    """The file cases as a console table."""
    lines = [f"{'boxes/kf':>8} {'protocol':<12} {'det rows':>10} {'MiB':>6} {'read s':>7} {'score s':>8} {'total s':>8} {'CPU s':>7}"]
    for r in results:
        lines.append(f"{r['boxes_per_keyframe']:>8} {r['protocol']:<12} {r['detection_rows']:>10} {r['file_mib']:>6.0f} "
                     f"{r['read_s']:>7.2f} {r['score_s']:>8.2f} {r['total_s']:>8.2f} {r['total_cpu_s']:>7.2f}")
    return "\n".join(lines)
