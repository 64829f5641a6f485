#!/usr/bin/env python
"""Train and evaluate EVAD with detectron2's trainer.

    python train_net.py --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml --num-gpus 8
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume            # continue where a run stopped

Multi-node: ``--num-machines N --machine-rank R --dist-url tcp://HOST:PORT`` (detectron2's launch).
Several processes on the CPU: ``--num-gpus 2 MODEL.DEVICE cpu`` (gloo; each process gets its share
of the cores; with a GPU visible launch picks NCCL, so hide it with ``CUDA_VISIBLE_DEVICES=``).
Schedules are given in epochs (SOLVER.MAX_EPOCHS, STEP_EPOCHS, WARMUP_EPOCHS) and turned into
iterations from the training set size; set SOLVER.MAX_EPOCHS 0 to use SOLVER.MAX_ITER/STEPS.
The trainer is ``evad_d2.engine.trainer`` (``EVADTrainer``, ``setup``, ``train_and_evaluate``).

A detectron2 LazyConfig (``.py``) runs on ``evad_d2.engine.lazy_trainer`` (same checkpointer,
epoch schedules, resumable sampler, layer decay and evaluator), with ``key=value`` overrides:

    python train_net.py --config-file configs/lazy/EVAD_ViT-B_K400_rho0.7_224.py --num-gpus 8 train.seed=0
    python train_net.py --config-file configs/lazy/EVAD_tiny_ava_like_cpu.py --eval-only train.init_checkpoint=W.pth
"""
from collections import OrderedDict

from detectron2.engine import default_argument_parser, launch

from evad_d2.engine.lazy_trainer import is_lazy_config, lazy_train_and_evaluate
from evad_d2.engine.trainer import train_and_evaluate


def main(args):
    """Train and evaluate (or ``--eval-only``) in this process: :func:`train_and_evaluate`, or
    :func:`lazy_train_and_evaluate` for a ``.py`` LazyConfig."""
    if is_lazy_config(args.config_file):
        return lazy_train_and_evaluate(args)
    return train_and_evaluate(args)


def invoke_main() -> OrderedDict:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
