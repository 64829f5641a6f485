#!/usr/bin/env python
"""Clips per second of the training data loader (decode + augment + targets), by worker count.

    python tools/benchmark_data.py [--dataset-root datasets/generated/ava_like] [--workers 0 2 4]
        [--num-frames 16 --sampling-rate 4 --short-side 224 --max-size 1333] [--frame-source video]

The generated dataset is written first if the root does not exist. ``measure_loader_throughput``
is the reusable part (tools/benchmark.py can import it).
"""
import argparse
import logging
import os
import subprocess
import sys
import time
from typing import Callable, List

from detectron2.data import build_detection_train_loader
from detectron2.data import transforms as T

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evad_d2.data import ClipDatasetMapper, load_ava_dataset  # noqa: E402

logger = logging.getLogger("evad_d2.benchmark_data")


def measure_loader_throughput(
    dataset: List[dict],
    mapper: Callable[[dict], dict],
    *,
    num_workers: int,
    batch_size: int = 4,
    num_batches: int = 20,
    warmup_batches: int = None,
) -> float:
    """Clips per second delivered by detectron2's training loader over ``dataset``.

    Args:
        dataset: dataset dicts.
        mapper: e.g. ``ClipDatasetMapper(cfg, is_train=True)``.
        num_workers: DataLoader worker processes (0 = in the main process).
        batch_size: clips per batch.
        num_batches: timed batches, after ``warmup_batches`` untimed ones. The default,
            2 * num_workers + 2, also drains the batches the workers prefetched while starting
            (2 per worker), so that the timed ones are produced at the steady-state rate.

    Returns:
        clips/s over the timed batches.
    """
    loader = build_detection_train_loader(
        dataset=dataset, mapper=mapper, total_batch_size=batch_size, num_workers=num_workers,
        aspect_ratio_grouping=False,
    )
    if warmup_batches is None:
        warmup_batches = 2 * num_workers + 2
    it = iter(loader)
    for _ in range(warmup_batches):
        next(it)
    start = time.perf_counter()
    clips = 0
    for _ in range(num_batches):
        clips += len(next(it))
    elapsed = time.perf_counter() - start
    del it  # stops the workers
    return clips / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-root", default=os.path.join("datasets", "generated", "ava_like"))
    parser.add_argument("--frame-source", choices=["video", "frames", "auto"], default="auto")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--sampling-rate", type=int, default=4)
    parser.add_argument("--short-side", type=int, nargs="+", default=[224])
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--color-jitter", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-batches", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if not os.path.isdir(os.path.join(args.dataset_root, "annotations")):
        print(f"{args.dataset_root} not found: generating the bundled dataset there")
        script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets", "generate_ava_like.py")
        subprocess.run([sys.executable, script, "--out", args.dataset_root, "--seed", "0", "--quiet"], check=True)
    dataset = load_ava_dataset(args.dataset_root, "train", "2.2", args.frame_source)
    action_ids = sorted({a for d in dataset for ann in d["annotations"] for a in ann["action_ids"]})
    mapper = ClipDatasetMapper(
        True,
        augmentations=[T.ResizeShortestEdge(args.short_side, args.max_size, "choice"), T.RandomFlip()],
        num_frames=args.num_frames, sampling_rate=args.sampling_rate, action_ids=action_ids,
        color_jitter=args.color_jitter,
    )
    src = "video" if "video_path" in dataset[0] else "frames"
    print(f"{len(dataset)} keyframes from {args.dataset_root} ({src}); clips {args.num_frames}x{args.sampling_rate}, "
          f"short side {args.short_side}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    for w in args.workers:
        rate = measure_loader_throughput(
            dataset, mapper, num_workers=w, batch_size=args.batch_size, num_batches=args.num_batches
        )
        print(f"workers={w}: {rate:.1f} clips/s")


if __name__ == "__main__":
    main()
