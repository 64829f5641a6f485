"""Clips per second of the training data loader (decode + augment + targets), by worker count."""
import logging
import os
import time
from typing import Callable, List, Optional, Sequence

from detectron2.data import build_detection_train_loader
from detectron2.data.build import get_detection_dataset_dicts

from evad_d2.data import ClipDatasetMapper, register_ava

logger = logging.getLogger(__name__)

# Name under which ``dataset_root`` is registered by :func:`training_dataset`.
BENCHMARK_TRAIN_DATASET = "evad_benchmark_train"


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


def training_dataset(cfg, dataset_root: Optional[str], dataset_version: str, config_file: str):
    """``(names, dataset dicts)`` of the config's training set, or of the AVA-format dataset at
    ``dataset_root`` (registered as :data:`BENCHMARK_TRAIN_DATASET`, split train) when given.
    ``cfg`` must be defrosted: ``DATASETS.TRAIN`` is set to that name.

    Raises:
        SystemExit: the dataset is missing, naming the generator command that writes one.
    """
    if dataset_root:
        if not os.path.isdir(dataset_root):
            raise SystemExit(
                f"--dataset-root {dataset_root}: no such directory. Write a small AVA-format dataset there with "
                f"`python datasets/generate_ava_like.py --out {dataset_root}`."
            )
        register_ava(BENCHMARK_TRAIN_DATASET, dataset_root, "train", dataset_version, "auto")
        cfg.DATASETS.TRAIN = (BENCHMARK_TRAIN_DATASET,)
    names = list(cfg.DATASETS.TRAIN)
    source = f"--dataset-root {dataset_root}" if dataset_root else f"DATASETS.TRAIN of {config_file}"
    try:
        return names, get_detection_dataset_dicts(names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    except (FileNotFoundError, KeyError) as e:
        raise SystemExit(
            f"--part loader: cannot load the training set {names} ({source}): {e}\n"
            "Pass --dataset-root DIR (an AVA-format dataset, e.g. from datasets/generate_ava_like.py) or set EVAD_DATASETS."
        ) from None


def benchmark_loader(cfg, *, workers: Optional[Sequence[int]], batch_size: int, num_batches: int,
                     dataset_root: Optional[str] = None, dataset_version: str = "2.2",
                     config_file: str = "the config") -> List[dict]:
    """The config's training loader (``ClipDatasetMapper(cfg, is_train=True)`` over
    :func:`training_dataset`), one row per worker count (default DATALOADER.NUM_WORKERS);
    ``keep_rate`` and ``gflops`` are None."""
    cfg = cfg.clone()
    cfg.defrost()
    names, dataset = training_dataset(cfg, dataset_root, dataset_version, config_file)
    mapper = ClipDatasetMapper(cfg, is_train=True)
    results = []
    for num_workers in workers if workers is not None else [cfg.DATALOADER.NUM_WORKERS]:
        rate = measure_loader_throughput(dataset, mapper, num_workers=num_workers, batch_size=batch_size, num_batches=num_batches)
        logger.info("%d workers: %.2f clips/s", num_workers, rate)
        results.append(
            {
                "keep_rate": None, "gflops": None, "num_workers": num_workers, "clips_per_s": rate,
                "frames_per_s": rate * cfg.INPUT.NUM_FRAMES, "batch_size": batch_size,
                "num_batches": num_batches, "datasets": names, "num_keyframes": len(dataset),
            }
        )
    return results
