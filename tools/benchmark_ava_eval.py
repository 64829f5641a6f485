#!/usr/bin/env python
"""Time the AVA frame-mAP evaluation (CSV parsing + scoring) at AVA v2.2 validation size.

Generates ground truth for ~57k keyframes (64 videos x 900 s, 1-4 people per keyframe, 1-3 of
the 60 evaluated actions plus some of the other 20 per person) and detection files with a
given number of boxes per keyframe, each with a score for all 60 classes (what a thresholded
detector writes: ~3 boxes per keyframe at person score 0.7; a heavier case keeps more boxes).
Files go to a temporary folder; timings cover reading both CSVs and scoring.

    python tools/benchmark_ava_eval.py --boxes 3 10 --json benchmark_ava_eval.json
"""
import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from evad_d2.evaluation.ava import evaluate_frame_map, read_ava_csv

# The 60 evaluated AVA v2.2 classes (ids of ava_action_list_v2.2_for_activitynet_2019.pbtxt).
AVA_EVAL_IDS = [
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36,
    37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66,
    67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
]


def make_groundtruth(rng, num_videos, seconds):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=900, help="keyframes per video")
    parser.add_argument("--boxes", type=int, nargs="+", default=[3, 10], help="detected boxes per keyframe, one case each")
    parser.add_argument("--protocols", nargs="+", default=["pyslowfast", "activitynet"])
    parser.add_argument("--json", default="benchmark_ava_eval.json")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as d:
        gt_path = os.path.join(d, "gt.csv")
        frames, boxes, labels, pids = make_groundtruth(rng, args.videos, args.seconds)
        write_groundtruth(gt_path, frames, boxes, labels, pids)
        excluded = {(f"video{v:06d}", t) for v, t in {frames[i] for i in rng.choice(len(frames), 200)}}
        print(f"ground truth: {len(set(frames))} keyframes, {len(frames)} rows")
        for nb in args.boxes:
            det_path = os.path.join(d, f"det_{nb}.csv")
            t0 = time.perf_counter()
            rows = write_detections(det_path, rng, frames, boxes, nb)
            size_mb = os.path.getsize(det_path) / 2**20
            print(f"{nb} boxes/keyframe: {rows} detection rows ({size_mb:.0f} MiB) written in {time.perf_counter() - t0:.1f}s")
            for protocol in args.protocols:
                t0 = time.perf_counter()
                gt = read_ava_csv(gt_path, with_scores=False, class_whitelist=AVA_EVAL_IDS)
                det = read_ava_csv(det_path, with_scores=True, class_whitelist=AVA_EVAL_IDS)
                t1 = time.perf_counter()
                res = evaluate_frame_map(gt, det, AVA_EVAL_IDS, excluded=excluded, protocol=protocol)
                t2 = time.perf_counter()
                results.append(dict(
                    boxes_per_keyframe=nb, protocol=protocol, keyframes=len(set(frames)), gt_rows=len(frames),
                    detection_rows=rows, file_mib=round(size_mb, 1), parse_s=round(t1 - t0, 2),
                    score_s=round(t2 - t1, 2), total_s=round(t2 - t0, 2), mAP=round(100 * res.mean_ap, 4),
                ))
                print(f"  {protocol:<12} parse {t1 - t0:6.2f}s  score {t2 - t1:6.2f}s  total {t2 - t0:6.2f}s  (mAP {100 * res.mean_ap:.2f})")
            os.remove(det_path)

    print()
    header = f"{'boxes/kf':>8} {'protocol':<12} {'det rows':>10} {'MiB':>6} {'parse s':>8} {'score s':>8} {'total s':>8}"
    print(header)
    for r in results:
        print(f"{r['boxes_per_keyframe']:>8} {r['protocol']:<12} {r['detection_rows']:>10} {r['file_mib']:>6.0f} "
              f"{r['parse_s']:>8.2f} {r['score_s']:>8.2f} {r['total_s']:>8.2f}")
    out = dict(machine=platform.processor() or platform.machine(), python=platform.python_version(),
               numpy=np.__version__, results=results)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
