"""Training runs of the tiny model on a generated dataset (see :mod:`evad_d2.testing`)."""
import contextlib
import logging
from typing import Dict, List, Optional

from .models import TINY_CONFIG

def generate_dataset(root, prefix: str, num_val_videos: int = 2) -> Dict[str, str]:
    """A small generated AVA-like dataset in ``root`` (seed 3, 3 training videos of 5 s),
    registered as ``{prefix}_train`` / ``{prefix}_val``; returns ``{"train": name, "val": name}``."""
    from ..data.synthetic import GeneratorSettings, generate

    settings = GeneratorSettings(seed=3, num_train_videos=3, num_val_videos=num_val_videos, duration=5)
    generate(str(root), settings, log=lambda *a: None)
    return register_dataset(root, prefix)


def register_dataset(root, prefix: str) -> Dict[str, str]:
    """Register the generated dataset in ``root`` as ``{prefix}_train/val`` (also in a spawned process)."""
    from ..data import register_ava

    names = {}
    for split in ("train", "val"):
        names[split] = f"{prefix}_{split}"
        register_ava(names[split], str(root), split, "2.2", "video")
    return names


def train_args(dataset: Dict[str, str], out_dir, *extra, eval_only: bool = False, resume: bool = False):
    """train_net's parsed arguments for the tiny config on ``dataset`` (:func:`generate_dataset`):
    6 iterations of batch 2 (steps at 4, warm-up 2, a checkpoint every 3), every proposal kept,
    seed 7, no loader workers, ``OUTPUT_DIR`` ``out_dir``; ``extra`` options go last."""
    from detectron2.engine import default_argument_parser

    argv = ["--config-file", TINY_CONFIG]
    if eval_only:
        argv.append("--eval-only")
    if resume:
        argv.append("--resume")
    argv += [
        "DATASETS.TRAIN", f"('{dataset['train']}',)",
        "DATASETS.TEST", f"('{dataset['val']}',)",
        "SOLVER.MAX_EPOCHS", "0",
        "SOLVER.MAX_ITER", "6",
        "SOLVER.STEPS", "(4,)",
        "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.BASE_LR", "1e-3",
        "SOLVER.CHECKPOINT_PERIOD", "3",
        "DATALOADER.NUM_WORKERS", "0",
        "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0",
        "SEED", "7",
        "OUTPUT_DIR", str(out_dir),
    ] + list(extra)
    return default_argument_parser().parse_args(argv)


def run_training(args, stop_after: Optional[int] = None):
    """Train like ``train_and_evaluate`` (``EVADTrainer`` with ``resume_or_load``) and return
    ``(trainer, {iteration: total_loss})``; ``stop_after``: see :func:`train_until`."""
    from ..engine.trainer import EVADTrainer, setup

    trainer = EVADTrainer(setup(args))
    trainer.resume_or_load(resume=args.resume)
    return train_until(trainer, stop_after)


def train_until(trainer, stop_after: Optional[int] = None):
    """Run ``trainer.train()`` (any detectron2 ``TrainerBase``, already resumed or loaded),
    interrupted after iteration ``stop_after`` as a KeyboardInterrupt would; returns
    ``(trainer, {iteration: total_loss})``."""
    from detectron2.engine import HookBase

    if stop_after is not None:

        class Stop(HookBase):
            def after_step(self):
                if self.trainer.iter == stop_after:
                    raise KeyboardInterrupt("simulated interruption")

        trainer.register_hooks([Stop()])
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    losses = {it: v for v, it in trainer.storage.history("total_loss").values()}
    return trainer, losses


@contextlib.contextmanager
def captured_warnings(logger_name: str):
    """Collects the messages (``List[str]``) of warnings and worse logged to ``logger_name`` inside
    the block (detectron2's ``setup_logger`` stops them reaching pytest's caplog)."""
    records: List[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
