"""Helpers shared by evad-d2's tests (like ``detectron2.utils.testing``): tiny configs and models,
synthetic clips and videos, small dataset files, training runs and runs of the command-line tools.
Import them from here (``from evad_d2.testing import tiny_cfg``); test files never import each other.

Everything here runs on the CPU in a source checkout (the configs, tools and dataset generator are
found from :data:`REPO_ROOT`). Nothing here is used by the library itself. Pytest fixtures built
on these stay in ``tests/conftest.py`` (``predictor``, ``generated``) and ``tests/data/conftest.py``
(``coded_video``, ``vfr_video``).

- :mod:`.models`: :data:`REPO_ROOT`, :data:`TINY_CONFIG`, :data:`SHALLOW_TINY`, :func:`tiny_cfg`,
  :func:`build_model_from_file`, :func:`build_tiny_model`, :func:`evad_loss_names`,
  :func:`random_clip`, :func:`gt_instances`, :func:`training_input`, :func:`eager_outputs`,
  :class:`Capture` (a submodule's outputs or inputs during a forward), :func:`randomise_weights`,
  :func:`assert_same_weights`.
- :mod:`.videos`: :func:`write_video`, :func:`decode_video`, :func:`coded_frame` /
  :func:`decode_index` (frames that carry their own index), :data:`VFR_MS`.
- :mod:`.files`: :func:`write_text`, :func:`write_ava_files` / :func:`evaluate_ava_rows` (AVA
  evaluation inputs), :func:`small_ucf_gt` / :func:`write_pickle` / :class:`Py2Pickler` (UCF101-24 /
  JHMDB ground truth), :class:`RunsShellCommand` / :func:`write_crafted_checkpoint` (malicious
  pickles), :func:`folder_files`.
- :mod:`.training`: :func:`generate_dataset`, :func:`register_dataset`, :func:`train_args`,
  :func:`run_training`, :func:`train_until`, :func:`captured_warnings`.
- :mod:`.streams`: :class:`UdpSender` (a live MPEG-TS stream over UDP/TCP), :func:`free_udp_port`,
  :func:`write_hls` / :func:`serve_folder` (an HLS playlist over HTTP), all on 127.0.0.1.
- :mod:`.tools`: :func:`run_tool`, :func:`tool_output`.
"""
from .files import (
    AVA_BOX_A,
    AVA_BOX_B,
    AVA_GT3,
    BOM,
    Py2Pickler,
    RunsShellCommand,
    evaluate_ava_rows,
    folder_files,
    small_ucf_gt,
    ucf_tube,
    write_ava_files,
    write_crafted_checkpoint,
    write_pickle,
    write_text,
)
from .models import (
    REPO_ROOT,
    SHALLOW_TINY,
    TINY_CLIP,
    TINY_CONFIG,
    TINY_NUM_CLASSES,
    TINY_NUM_PROPOSALS,
    Capture,
    assert_same_weights,
    build_model_from_file,
    build_tiny_model,
    eager_outputs,
    evad_loss_names,
    gt_instances,
    random_clip,
    randomise_weights,
    tiny_cfg,
    training_input,
)
from .streams import UdpSender, free_udp_port, serve_folder, write_hls
from .tools import run_tool, tool_output
from .training import captured_warnings, generate_dataset, register_dataset, run_training, train_args, train_until
from .videos import CODED_H, CODED_W, VFR_MS, coded_frame, decode_index, decode_video, write_video

__all__ = [
    "AVA_BOX_A", "AVA_BOX_B", "AVA_GT3", "BOM", "Py2Pickler", "RunsShellCommand", "evaluate_ava_rows",
    "folder_files", "small_ucf_gt", "ucf_tube", "write_ava_files", "write_crafted_checkpoint",
    "write_pickle", "write_text", "REPO_ROOT", "SHALLOW_TINY", "TINY_CLIP", "TINY_CONFIG", "TINY_NUM_CLASSES",
    "TINY_NUM_PROPOSALS", "Capture", "assert_same_weights", "build_model_from_file", "build_tiny_model",
    "eager_outputs", "evad_loss_names", "gt_instances", "random_clip", "randomise_weights", "tiny_cfg",
    "training_input", "UdpSender", "free_udp_port", "serve_folder", "write_hls", "run_tool", "tool_output",
    "captured_warnings", "generate_dataset", "register_dataset", "run_training",
    "train_args", "train_until", "CODED_H", "CODED_W", "VFR_MS", "coded_frame", "decode_index",
    "decode_video", "write_video",
]
