"""Export (tools/export_model.py, evad_d2.export), as TorchScript and as a torch.export
ExportedProgram: the graph runs without detectron2 or evad_d2, agrees with the eager model, keeps
the person threshold dynamic and refuses clips of another size."""
import json
import subprocess
import sys

import pytest
import torch

from evad_d2.export import EXPORT_FORMATS, ExportableEVAD, export_evad, load_exported
from evad_d2.testing import TINY_CLIP, TINY_CONFIG, build_tiny_model, eager_outputs, random_clip, run_tool

T, H, W = TINY_CLIP  # the size of random_clip


def _assert_same(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-5)


@pytest.fixture(scope="module", params=["exported_program", "torchscript"])  # ONNX: tests/export/test_onnx.py
def exported(request, tmp_path_factory):
    """The tiny model with the threshold at 0.3, exported through the command line in each format."""
    out = tmp_path_factory.mktemp("export")
    model = build_tiny_model("MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.3").eval()
    weights = out / "weights.pth"
    torch.save({"model": model.state_dict()}, weights)
    res = run_tool(
        "tools/export_model.py", "--config-file", TINY_CONFIG, "--output", out / "graph", "--input-size", T, H, W,
        "--format", request.param, "MODEL.WEIGHTS", weights, "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.3",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return model, out / "graph"


def test_export_writes_graph_and_metadata(exported):
    model, out = exported
    info = json.loads((out / "model.json").read_text())
    assert info["format"] in EXPORT_FORMATS and info["file"] == EXPORT_FORMATS[info["format"]]
    assert (out / info["file"]).is_file()
    assert info["input"]["shape"] == [3, T, H, W]
    assert info["keep_rates"] == [1.0, 0.7, 1.0, 0.7] and info["score_thresh"] == pytest.approx(0.3)
    assert info["device"] == "cpu" and info["max_abs_diff"] < 1e-4
    assert info["check_actors"] > 0  # the check compared values, not only shapes
    assert [c["id"] for c in info["classes"]] == list(range(1, 7))
    assert all(c["name"] for c in info["classes"])


def test_graph_runs_with_torch_and_torchvision_alone(exported, tmp_path):
    model, out = exported
    clips = torch.stack([random_clip(seed=s) for s in (11, 12)])
    torch.save(clips, tmp_path / "clips.pt")
    info = json.loads((out / "model.json").read_text())
    load = {"torchscript": "torch.jit.load(path)", "exported_program": "torch.export.load(path).module()"}[info["format"]]
    script = f"""
import sys, torch, torchvision
path = {str(out / info['file'])!r}
model = {load}
outs = [model(c) for c in torch.load({str(tmp_path / 'clips.pt')!r})]
torch.save(outs, {str(tmp_path / 'outs.pt')!r})
assert not any(m.split('.')[0] in ('detectron2', 'evad_d2', 'fvcore') for m in sys.modules), 'needs more than torch'
"""
    # Run from an empty directory: the repository's packages cannot be imported from there.
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    outs = torch.load(tmp_path / "outs.pt")
    for clip, got in zip(clips, outs):
        _assert_same(got, eager_outputs(model, clip))


def _person_bias(model):
    """The last localization stage's class-logit bias, in the eager model or an exported graph."""
    prefix = "" if hasattr(model, "localization_head") else "model."
    return dict(model.named_parameters())[prefix + "localization_head.stages.1.class_logits.bias"]


def test_threshold_stays_dynamic(exported):
    model, out = exported
    graph, _ = load_exported(str(out))
    clip = random_clip(seed=5)
    counts = []
    # Shift the last stage's person logit: the same graph must return fewer, then more actors.
    for shift in (-20.0, 0.0, 20.0):
        for m in (graph, model):
            with torch.no_grad():
                _person_bias(m)[0] += shift
        got = graph(clip)
        _assert_same(got, eager_outputs(model, clip))
        counts.append(len(got[0]))
        for m in (graph, model):
            with torch.no_grad():
                _person_bias(m)[0] -= shift
    assert counts[0] == 0 and counts[2] == 8 and counts[0] < counts[1] <= counts[2]


def test_graph_refuses_another_clip_size(exported):
    graph, info = load_exported(str(exported[1]))
    if info["format"] == "torchscript":
        # TorchScript surfaces the graph's RuntimeError as torch.jit.Error, with the message.
        error, message = torch.jit.Error, r"exported for clips of shape \(C, T, H, W\) = \[3, 8, 64, 96\] but got \[3, 8, 64, 64\]"
    else:  # the ExportedProgram's own check of its static input shape
        error, message = AssertionError, r"clip.size\(\)\[3\] == 96"
    with pytest.raises(error, match=message):
        graph(random_clip(h=64, w=64))


def test_export_at_another_keep_rate_and_errors(tmp_path):
    model = build_tiny_model("MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0").eval()
    model.set_keep_rates([1.0, 0.5, 1.0, 0.5])
    info = export_evad(model, (T, H, W), str(tmp_path / "g"), fmt="exported_program", metadata={"note": "x"})
    assert info["keep_rates"] == [1.0, 0.5, 1.0, 0.5] and info["note"] == "x"
    graph, _ = load_exported(str(tmp_path / "g"))
    clip = random_clip(seed=9)
    _assert_same(graph(clip), eager_outputs(model, clip))
    with pytest.raises(ValueError, match="input size must be positive"):
        export_evad(model, (0, H, W), str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="export format must be one of"):
        export_evad(model, (T, H, W), str(tmp_path / "bad"), fmt="tflite")
    with pytest.raises(FileNotFoundError, match="not an EVAD export directory"):
        load_exported(str(tmp_path))
    res = run_tool(
        "tools/export_model.py", "--config-file", TINY_CONFIG, "--output", tmp_path / "h",
        "MODEL.WEIGHTS", tmp_path / "missing.pth",
    )
    assert res.returncode == 2 and "missing.pth" in res.stderr and "does not exist" in res.stderr


def _wide_box_model(official):
    """Untamed tiny model whose last stage widens every box past the clip's borders (dw + 2), so
    that clipping matters, and with threshold 0; some boxes are empty after clipping."""
    model = build_tiny_model("MODEL.EVAD.OFFICIAL_MODE", official, "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0", tame=False).eval()
    with torch.no_grad():
        model.localization_head.stages[-1].bboxes_delta.bias[2] += 2.0
    return model


@pytest.mark.parametrize("official", [False, True])
def test_exportable_module_postprocesses_as_the_model_in_each_mode(official):
    model = _wide_box_model(official)
    wrapper = ExportableEVAD(model, (T, H, W))
    x_max, y_max = (W - 1, H - 1) if official else (W, H)
    clipped = empty = 0
    for seed in range(4):
        clip = random_clip(seed=seed)
        with torch.no_grad():
            got = wrapper(clip)
        _assert_same(got, eager_outputs(model, clip))
        boxes = got[0]
        assert (boxes[:, 0::2] <= x_max).all() and (boxes[:, 1::2] <= y_max).all() and (boxes >= 0).all()
        clipped += int((boxes[:, 2] == x_max).sum())
        empty += int(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).sum())
    assert clipped > 0  # boxes reach the border, where the two modes differ
    # Official mode keeps the empty boxes (all 8 proposals pass threshold 0), the default drops them.
    assert (empty > 0) if official else (empty == 0)


def test_exported_graph_in_official_mode_equals_the_model(tmp_path):
    model = _wide_box_model(True)
    info = export_evad(model, (T, H, W), str(tmp_path / "g"), fmt="exported_program")
    assert info["official_mode"] is True
    graph, _ = load_exported(str(tmp_path / "g"))
    clip = random_clip(seed=1)
    got = graph(clip)
    assert len(got[0]) == 8  # empty boxes included
    _assert_same(got, eager_outputs(model, clip))
