#!/usr/bin/env python
"""Export a trained EVAD model for deployment: TorchScript (detectron2's export_model, tracing),
a torch.export ExportedProgram, or ONNX for ONNX Runtime.

Example:
    python tools/export_model.py --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml \\
        --input-size 16 224 298 --output exported/ MODEL.WEIGHTS model_final.pth MODEL.DEVICE cuda

Writes ``OUTPUT/model.ts`` (``--format torchscript``, the default), ``OUTPUT/model.pt2``
(``--format exported_program``) or ``OUTPUT/model.onnx`` (``--format onnx``, opset ``--opset``;
needs ``pip install 'evad-d2[onnx]'``) and ``OUTPUT/model.json`` (input shape, outputs, keep
rates, threshold, classes). The graph runs with torch and torchvision alone (ONNX: with
onnxruntime alone)::

    import torch, torchvision
    model = torch.jit.load("exported/model.ts")               # or torch.export.load("exported/model.pt2").module()
    boxes, scores, action_scores = model(clip)  # (3, T, H, W) float RGB in [0, 255]

    import onnxruntime
    session = onnxruntime.InferenceSession("exported/model.onnx", providers=["CPUExecutionProvider"])
    boxes, scores, action_scores = session.run(None, {"clip": clip_numpy})  # float32 (3, T, H, W)

``--input-size`` is the size the network sees, i.e. after the test resize (for AVA's 4:3 frames
and a short side of 224: 16 224 298; the default is INPUT.NUM_FRAMES and a square of
INPUT.MIN_SIZE_TEST). Export on the device you deploy on (``MODEL.DEVICE``): the graph keeps it.
``--keep-rate RHO`` sets the pruning blocks' keep rate (as ``tools/benchmark.py`` does).
"""
import argparse
import json
import os
import sys

from detectron2.utils.logger import setup_logger

from evad_d2 import get_evad_cfg
from evad_d2.checkpoint import CheckpointFormatError
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.export import EXPORT_FORMATS, MIN_ONNX_OPSET, ONNX_OPSET, export_evad
from evad_d2.export.exporter import CHECK_ATOL
from evad_d2.modeling.backbone import scaled_keep_rates


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, help="directory for model.ts and model.json")
    p.add_argument("--format", choices=sorted(EXPORT_FORMATS), default="torchscript",
                   help="torchscript: torch.jit.trace (model.ts); exported_program: torch.export (model.pt2)")
    p.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("T", "H", "W"), help="network input clip size")
    p.add_argument("--keep-rate", type=float, default=None, help="keep rate of the pruning blocks (default: the config's)")
    p.add_argument("--opset", type=int, default=ONNX_OPSET,
                   help=f"ONNX opset of --format onnx (RoiAlign with aligned boxes needs {MIN_ONNX_OPSET}; torch 2.14 writes 18 and up)")
    p.add_argument("--check-atol", type=float, default=CHECK_ATOL,
                   help="largest |graph - model| the check accepts on scores (boxes: times their size)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (e.g. MODEL.WEIGHTS W)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    cfg = get_evad_cfg(args.config_file, args.opts)
    if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        print(f"export_model.py: error: MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} does not exist", file=sys.stderr)
        return 2
    # The predictor builds the model, loads the weights (never running code from them) and knows
    # the class names.
    try:
        predictor = EVADPredictor(cfg)
    except CheckpointFormatError as e:
        print(f"export_model.py: error: MODEL.WEIGHTS: {e}", file=sys.stderr)
        return 2
    model = predictor.model
    if args.keep_rate is not None:
        model.set_keep_rates(scaled_keep_rates(list(cfg.MODEL.EVAD.KEEP_RATES), args.keep_rate))
    size = args.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    metadata = {
        "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "keyframe_index": predictor.keyframe_index,
        "sampling_rate": predictor.sampling_rate,
        "frame_rate": predictor.frame_rate,
        "classes": [{"id": int(i), "name": n} for i, n in zip(predictor.action_ids, predictor.class_names)],
    }
    try:
        info = export_evad(model, size, args.output, fmt=args.format, metadata=metadata, opset=args.opset,
                           check_atol=args.check_atol)
    # A setting the format cannot export, onnx not installed, or the graph failing the check.
    except (ValueError, ImportError, RuntimeError) as e:
        print(f"export_model.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: info[k] for k in ("format", "input", "device", "keep_rates", "check_actors", "max_abs_diff")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
