#!/usr/bin/env python
"""Clips per second of the training data loader (decode + augment + targets), by worker count.

    python tools/benchmark_data.py [--dataset-root datasets/generated/ava_like] [--workers 0 2 4]
        [--num-frames 16 --sampling-rate 4 --short-side 224 --max-size 1333] [--frame-source video]

The generated dataset is written first if the root does not exist. The measure is
``evad_d2.benchmark.loader.measure_loader_throughput``.
"""
import argparse
import logging
import os

from detectron2.data import transforms as T

from evad_d2.benchmark.loader import measure_loader_throughput
from evad_d2.data import ClipDatasetMapper, load_ava_dataset
from evad_d2.data.synthetic import GeneratorSettings, generate


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
        generate(args.dataset_root, GeneratorSettings(seed=0), log=lambda *a: None)
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
