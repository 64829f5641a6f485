"""Helpers shared by evad-d2's tests (like ``detectron2.utils.testing``): tiny configs and models,
synthetic clips and videos, small dataset files, and runs of the command-line tools.

Everything here runs on the CPU in a source checkout (the configs, tools and dataset generator are
found from :data:`REPO_ROOT`). Nothing here is used by the library itself.

- Configs and models: :data:`TINY_CONFIG`, :func:`tiny_cfg`, :func:`build_model_from_file`,
  :func:`build_tiny_model`, :func:`evad_loss_names`.
- Model inputs: :func:`random_clip`, :func:`gt_instances`, :func:`training_input`; :class:`Capture`
  (a submodule's outputs or inputs during a forward).
- Videos: :func:`write_video`, :func:`decode_video`, :func:`coded_frame` / :func:`decode_index`
  (frames that carry their own index), :data:`VFR_MS`.
- Files: :func:`write_text`, :func:`write_ava_files` / :func:`evaluate_ava_rows` (AVA evaluation
  inputs), :func:`small_ucf_gt` / :func:`write_pickle` / :class:`Py2Pickler` (UCF101-24 / JHMDB
  ground truth), :class:`RunsShellCommand` (a malicious pickle payload).
- Training: :func:`generate_dataset`, :func:`register_dataset`, :func:`train_args`,
  :func:`run_training`, :func:`train_until`.
- Tools: :func:`run_tool`, :func:`tool_output`.
"""
import os
import pickle
import struct
import subprocess
import sys
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import av
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from .config import add_evad_config

__all__ = [
    "REPO_ROOT", "TINY_CONFIG", "TINY_NUM_CLASSES", "TINY_NUM_PROPOSALS", "TINY_CLIP",
    "tiny_cfg", "build_model_from_file", "build_tiny_model", "evad_loss_names",
    "random_clip", "gt_instances", "training_input", "Capture",
    "CODED_W", "CODED_H", "VFR_MS", "coded_frame", "decode_index", "write_video", "decode_video",
    "BOM", "write_text", "AVA_BOX_A", "AVA_BOX_B", "AVA_GT3", "write_ava_files", "evaluate_ava_rows",
    "ucf_tube", "small_ucf_gt", "write_pickle", "Py2Pickler", "RunsShellCommand",
    "generate_dataset", "register_dataset", "train_args", "run_training", "train_until", "run_tool", "tool_output",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The source checkout holding ``evad_d2/``, ``configs/``, ``tools/`` and ``datasets/``."""

TINY_CONFIG = os.path.join(REPO_ROOT, "configs", "tiny", "EVAD_tiny_test.yaml")
"""The smallest honest EVAD (same architecture, tiny widths; 8 frames, 64 px), for CPU tests."""

TINY_NUM_CLASSES = 6  # MODEL.EVAD.NUM_ACTION_CLASSES of TINY_CONFIG
TINY_NUM_PROPOSALS = 8  # MODEL.EVAD.LOC.NUM_PROPOSALS of TINY_CONFIG
TINY_CLIP = (8, 64, 96)  # (T, H, W) of the default random_clip


# --------------------------------------------------------------------------- configs and models
def tiny_cfg(*opts, keep_all_proposals: bool = False):
    """The detectron2 config of :data:`TINY_CONFIG` with ``opts`` (``KEY, VALUE, ...``) merged.

    keep_all_proposals: set ``MODEL.EVAD.LOC.SCORE_THRESH_TEST`` 0 (before ``opts``, which may
    override it), so that a model with random weights outputs every proposal for a test to check.
    """
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    head = ["MODEL.EVAD.LOC.SCORE_THRESH_TEST", 0.0] if keep_all_proposals else []
    cfg.merge_from_list([*head, *opts])
    return cfg


def build_model_from_file(config_file: str, *opts, seed: int = 0, device: str = "cpu"):
    """The model of ``config_file`` + ``opts`` on ``device`` (``MODEL.DEVICE`` overridden), weights
    drawn after ``torch.manual_seed(seed)``, in evaluation mode. ``device="meta"``: built under
    ``torch.device("meta")`` (shapes only, no weights, no seeding)."""
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = device
    if device == "meta":
        with torch.device("meta"):
            return build_model(cfg).eval()
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def build_tiny_model(*opts, seed: int = 0, tame: bool = True):
    """The tiny model (:func:`tiny_cfg` + ``opts``) with weights drawn after
    ``torch.manual_seed(seed)``, in training mode (as ``build_model`` returns it).

    tame: scale the box-delta layers down by 10. At random init the tiny head's deltas are large
    enough that every stage-0 box can leave the image (seed 0 does), so later stages pool all-zero
    RoIs and inference outputs nothing; with small deltas the boxes stay near the whole-image
    proposals.
    """
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(*opts))
    if tame:
        with torch.no_grad():
            for stage in model.localization_head.stages:
                stage.bboxes_delta.weight.mul_(0.1)
    return model


def evad_loss_names(num_stages: int, depth: int, deep_supervision: bool, linear: bool) -> set:
    """The loss names EVAD's training forward returns for ``num_stages`` localization stages and a
    decoder of ``depth`` layers (``linear``: the linear action head, which has no decoder layers)."""
    names = {"loss_ce", "loss_bbox", "loss_giou", "loss_action"}
    if deep_supervision:
        names |= {f"loss_{n}_stage{k}" for n in ("ce", "bbox", "giou") for k in range(num_stages - 1)}
        if not linear:
            names |= {f"loss_action_layer{k}" for k in range(depth - 1)}
    return names


# --------------------------------------------------------------------------- model inputs
def random_clip(h: int = TINY_CLIP[1], w: int = TINY_CLIP[2], t: int = TINY_CLIP[0], seed: int = 0) -> torch.Tensor:
    """(3, t, h, w) float clip, uniform in [0, 255), from its own generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, t, h, w, generator=g) * 255


def gt_instances(boxes, actions, size: Tuple[int, int], num_classes: int = TINY_NUM_CLASSES) -> Instances:
    """Ground truth of one clip: ``gt_boxes`` (N, 4) XYXY pixels, ``gt_actions`` (N, num_classes)
    multi-hot, for an image of ``size`` (h, w)."""
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_actions = torch.tensor(actions, dtype=torch.float32).reshape(-1, num_classes)
    return inst


def training_input(h: int = TINY_CLIP[1], w: int = TINY_CLIP[2], num_persons: int = 1, seed: int = 0) -> dict:
    """One training input of the tiny model: ``{"clip": random_clip(h, w, seed=seed), "instances"}``
    with ``num_persons`` boxes of size (w/3, h/2) at random corners and random multi-hot actions
    (probability 0.4 each), drawn from a generator seeded with ``seed + 100``."""
    g = torch.Generator().manual_seed(seed + 100)
    boxes, actions = [], []
    for _ in range(num_persons):
        x1, y1 = float(torch.randint(0, w // 2, (1,), generator=g)), float(torch.randint(0, h // 2, (1,), generator=g))
        boxes.append([x1, y1, x1 + w / 3, y1 + h / 2])
        actions.append((torch.rand(TINY_NUM_CLASSES, generator=g) < 0.4).float().tolist())
    return {"clip": random_clip(h, w, seed=seed), "instances": gt_instances(boxes, actions, (h, w))}


class Capture:
    """Records what a submodule returns on each call during the ``with`` block (``pre=True``: the
    positional inputs it is called with instead) in ``.calls``; the hook is removed on exit."""

    def __init__(self, module: torch.nn.Module, pre: bool = False):
        self.calls = []
        if pre:
            self.handle = module.register_forward_pre_hook(lambda m, args: self.calls.append(args))
        else:
            self.handle = module.register_forward_hook(lambda m, args, out: self.calls.append(out))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --------------------------------------------------------------------------- videos
CODED_W, CODED_H = 64, 48  # default size of coded_frame

# Presentation times (ms) of a variable-frame-rate video: irregular steps, a burst, a 0.5 s gap,
# then 10 fps to 3 s. Its header's average rate (about 11.3 fps) matches none of them.
VFR_MS = [0, 30, 50, 120, 135, 300, 310, 320, 400, 433, 466, 500, 1000, 1033] + list(range(1100, 3001, 100))


def coded_frame(i: int, width: int = CODED_W, height: int = CODED_H) -> np.ndarray:
    """(height, width, 3) uint8 frame carrying its index ``i`` in two grey patches (i // 16 and
    i % 16, 16 levels apart), robust to codec error up to +-7; a bar moves 3 px per frame so that
    neighbours differ a lot. :func:`decode_index` reads the index back."""
    img = np.full((height, width, 3), 40, np.uint8)
    img[:16, :16] = (i // 16) * 16 + 8
    img[:16, 16:32] = (i % 16) * 16 + 8
    x = (3 * i) % (width - 4)
    img[20:, x:x + 4] = (230, 230, 230)
    return img


def decode_index(frame: np.ndarray) -> int:
    """The index a (decoded) :func:`coded_frame` carries."""
    hi = int(round((frame[4:12, 4:12].mean() - 8) / 16))
    lo = int(round((frame[4:12, 20:28].mean() - 8) / 16))
    return hi * 16 + lo


def write_video(path, frames: Sequence[np.ndarray], rate=30, *, times_ms: Optional[Sequence[int]] = None,
                crf: int = 4, gop: int = 10, pix_fmt: str = "yuv420p", faststart: bool = False,
                rotation: Optional[float] = None, hflip: bool = False, vflip: bool = False,
                container_format: str = "mp4", tags: Optional[Dict[str, str]] = None) -> None:
    """Encode ``frames`` ((H, W, 3) uint8 RGB) with H.264 at ``rate`` fps, near-lossless (``crf`` 4:
    decoded frames are within a few levels of the source), no B-frames, a keyframe every ``gop``.

    times_ms: presentation times in ms (a variable frame rate); rotation (degrees counter-clockwise)
    / hflip / vflip: a display matrix as phones write it (PyAV's ``set_display_rotation``); tags:
    stream metadata (e.g. an old ``rotate`` tag); faststart: the index before the data.
    """
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        s.options = {"crf": str(crf), "g": str(gop), "bf": "0", "threads": "1"}
        if times_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None or hflip or vflip:
            s.set_display_rotation(rotation or 0, hflip=hflip, vflip=vflip)
        s.metadata.update(tags or {})
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decode_video(path) -> List[Tuple[float, np.ndarray]]:
    """Every frame of ``path`` as ``(time in seconds, (H, W, 3) uint8 RGB)``, in decoding order."""
    with av.open(str(path)) as c:
        return [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


# --------------------------------------------------------------------------- small files
BOM = "\ufeff"  # the UTF-8 byte-order mark, as text


def write_text(path, text: str, bom: bool = False) -> str:
    """Write ``text`` as UTF-8 (after a byte-order mark with ``bom``) to ``path`` (a pathlib.Path);
    returns the path as str."""
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


AVA_BOX_A = (0.1, 0.1, 0.4, 0.9)  # normalised x1, y1, x2, y2
AVA_BOX_B = (0.5, 0.2, 0.9, 0.8)
# A small AVA ground truth: (video_id, timestamp, box, action_id, person_id) rows.
AVA_GT3 = [("vidA", 902, AVA_BOX_A, 1, 0), ("vidA", 902, AVA_BOX_A, 2, 0), ("vidA", 903, AVA_BOX_B, 3, 1),
           ("vidB", 1000, AVA_BOX_B, 1, 0)]


def write_ava_files(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=()) -> Tuple[str, str, str, str]:
    """AVA evaluation inputs in ``tmp_path``: ``gt.csv`` from (video, ts, box, action, person) rows,
    ``det.csv`` from (video, ts, box, action, score) rows, ``map.pbtxt`` naming ``classes`` and
    ``ex.csv`` from (video, ts) ``exclusions``; returns their paths (gt, det, label map, exclusions)."""
    lm = tmp_path / "map.pbtxt"
    lm.write_text("".join(f'item {{\n  name: "act{c}"\n  id: {c}\n}}\n' for c in classes))
    gt = tmp_path / "gt.csv"
    gt.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{p}\n" for v, t, b, c, p in gt_rows))
    det = tmp_path / "det.csv"
    det.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{s}\n" for v, t, b, c, s in det_rows))
    ex = tmp_path / "ex.csv"
    ex.write_text("".join(f"{v},{t:04d}\n" for v, t in exclusions))
    return str(gt), str(det), str(lm), str(ex)


def evaluate_ava_rows(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=(), protocol="pyslowfast"):
    """The frame-mAP result of ``evaluate_ava_files`` on :func:`write_ava_files`' files."""
    from .evaluation.ava import evaluate_ava_files

    gt, det, lm, ex = write_ava_files(tmp_path, gt_rows, det_rows, classes, exclusions)
    result, _ = evaluate_ava_files(gt, det, lm, ex, protocol=protocol)
    return result


def ucf_tube(frames, box) -> np.ndarray:
    """(L, 5) UCF/JHMDB ground-truth tube: rows ``(frame, x1, y1, x2, y2)``, ``box`` on each frame."""
    frames = np.asarray(list(frames), dtype=np.float64)
    return np.concatenate([frames[:, None], np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1))], axis=1)


def small_ucf_gt() -> dict:
    """A UCF101-24 / JHMDB ground truth (the layout of :mod:`evad_d2.data.formats.ucf_jhmdb`): two
    test videos (class 0 and class 1) and a training video."""
    return {
        "labels": ["run", "jump"],
        "gttubes": {
            "run/v1": {0: [ucf_tube(range(1, 11), [0, 0, 10, 10])]},
            "jump/v2": {1: [ucf_tube(range(3, 9), [20, 20, 40, 50])]},
            "run/v0": {0: [ucf_tube(range(1, 5), [0, 0, 10, 10])]},
        },
        "nframes": {"run/v1": 12, "jump/v2": 10, "run/v0": 5},
        "train_videos": [["run/v0"]],
        "test_videos": [["run/v1", "jump/v2"]],
        "resolution": {"run/v1": (60, 80), "jump/v2": (60, 80), "run/v0": (60, 80)},
    }


def write_pickle(tmp_path, obj, name: str = "gt.pkl") -> str:
    """Pickle ``obj`` (protocol 2) to ``tmp_path / name``; returns the path as str."""
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as cPickle protocol 2
    wrote the released ACT pickles; Python 3 reads them back only with ``encoding="latin1"``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


class RunsShellCommand:
    """Pickles as ``os.system("touch MARKER")``: loading it with plain pickle makes the marker file,
    so a test can show that a loader does not (the attack evad_d2.utils.safe_pickle refuses)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- training
def generate_dataset(root, prefix: str, num_val_videos: int = 2) -> Dict[str, str]:
    """A small generated AVA-like dataset in ``root`` (seed 3, 3 training videos of 5 s),
    registered as ``{prefix}_train`` / ``{prefix}_val``; returns ``{"train": name, "val": name}``."""
    from .data.synthetic import GeneratorSettings, generate

    settings = GeneratorSettings(seed=3, num_train_videos=3, num_val_videos=num_val_videos, duration=5)
    generate(str(root), settings, log=lambda *a: None)
    return register_dataset(root, prefix)


def register_dataset(root, prefix: str) -> Dict[str, str]:
    """Register the generated dataset in ``root`` as ``{prefix}_train/val`` (also in a spawned process)."""
    from .data import register_ava

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
    from .engine.trainer import EVADTrainer, setup

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


# --------------------------------------------------------------------------- tools
def run_tool(script: str, *args, env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None
             ) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in a subprocess from :data:`REPO_ROOT` (``script`` relative to it,
    e.g. ``"tools/demo.py"``), one OpenMP thread, text output captured; ``env`` adds variables."""
    return subprocess.run(
        [sys.executable, script, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def tool_output(script: str, *args, env: Optional[Dict[str, str]] = None) -> str:
    """:func:`run_tool`, asserting it exits 0 (the end of its stderr as the message); its stdout."""
    res = run_tool(script, *args, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout
