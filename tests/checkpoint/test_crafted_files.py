"""Crafted pickles (``os.system`` in ``__reduce__``) through every entry point that loads
``MODEL.WEIGHTS`` (the checkpointer, the predictor, tools/demo.py, export_model.py,
visualize_pruning.py) are refused with an error naming the file, the marker never made; config
files with Python YAML tags too."""

import numpy as np
import pytest
import yaml

from evad_d2 import get_evad_cfg
from evad_d2.checkpoint import CheckpointFormatError, DamagedCheckpointError, EVADCheckpointer
from evad_d2.checkpoint.convert_official import official_converter_cfg
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.testing import (
    TINY_CONFIG as TINY,
    build_model_from_file,
    run_tool,
    tiny_cfg,
    write_crafted_checkpoint,
    write_video,
)


def tool_status(name, argv):
    """``python tools/NAME.py ARGV`` from the repository root: (exit code, stderr)."""
    res = run_tool(f"tools/{name}.py", *argv)
    return res.returncode, res.stderr


@pytest.mark.parametrize("ext", [".pkl", ".pth", ".pyth"])
def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, ext):
    marker = tmp_path / "MARKER"
    path = write_crafted_checkpoint(tmp_path / f"crafted{ext}", marker)
    with pytest.raises(CheckpointFormatError, match="crafted") as e:
        EVADCheckpointer(build_model_from_file(TINY)).load(path)
    assert "system" in str(e.value) and path in str(e.value)
    assert not isinstance(e.value, DamagedCheckpointError)  # refused, not damaged: no fallback
    assert not marker.exists()


@pytest.mark.slow
def test_crafted_pickle_is_refused_by_the_predictor_and_the_tools(tmp_path):
    marker = tmp_path / "MARKER"
    path = write_crafted_checkpoint(tmp_path / "crafted.pkl", marker)
    # tools/demo.py builds its model through EVADPredictor.
    with pytest.raises(CheckpointFormatError, match="posix.system|nt.system"):
        EVADPredictor(tiny_cfg("MODEL.WEIGHTS", path, keep_all_proposals=True))
    video = tmp_path / "v.mp4"
    write_video(video, [np.full((64, 96, 3), 90, np.uint8)] * 20)
    demo_argv = ["--config-file", TINY, "--input", str(video), "--output", str(tmp_path / "out.mp4"), "--no-progress"]
    rc, err = tool_status("demo", demo_argv + ["MODEL.WEIGHTS", path])
    assert rc == 2
    assert "demo.py: error: MODEL.WEIGHTS:" in err
    rc, err = tool_status("export_model", ["--config-file", TINY, "--output", str(tmp_path / "exported"), "MODEL.WEIGHTS", path])
    assert rc == 2
    assert "refused to load" in err
    argv = ["--config-file", TINY, "--input", str(video), "--output-dir", str(tmp_path / "vis"), "MODEL.WEIGHTS", path]
    rc, err = tool_status("visualize_pruning", argv)
    assert rc == 2
    assert "refused to load" in err
    assert not marker.exists() and not (tmp_path / "exported" / "model.ts").exists()


def test_config_file_with_a_python_tag_is_refused_without_running_it(tmp_path):
    # detectron2's merge_from_file falls back to yaml.unsafe_load by default.
    marker = tmp_path / "MARKER"
    config = tmp_path / "crafted.yaml"
    config.write_text(f'_BASE_: "{TINY}"\nSEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(yaml.constructor.ConstructorError, match=f'python/object/apply:os.system(.|\n)*{config}", line 2'):
        get_evad_cfg(str(config))
    with pytest.raises(yaml.constructor.ConstructorError):
        official_converter_cfg(str(config), [], [])
    assert not marker.exists()
