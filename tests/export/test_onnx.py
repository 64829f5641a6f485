"""ONNX export (evad_d2.export, --format onnx): the graph, boxes included, runs in ONNX Runtime
without torch, equals the eager model within 1e-4, keeps the person threshold dynamic, maps the
3D RoIAlign to aligned ONNX RoiAlign, and refuses what it cannot export with the key to change."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from evad_d2.export import (  # noqa: E402
    MIN_ONNX_OPSET,
    ONNX_OPSET,
    ExportableEVAD,
    OnnxRuntimeGraph,
    check_onnx_exportable,
    export_evad,
    load_exported,
    onnxruntime_providers,
)
from evad_d2.export.onnx_export import require_onnx_package  # noqa: E402
from evad_d2.testing import (  # noqa: E402
    SHALLOW_TINY, TINY_CONFIG, TINY_NUM_PROPOSALS, build_tiny_model, eager_outputs, random_clip, run_tool,
)

T, H, W = 8, 64, 96
SMALL = (*SHALLOW_TINY, "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.3")
PERSON_BIAS = "model.localization_head.stages.0.class_logits.bias"


def _assert_same(got, expected):
    for x, y in zip(got, expected):
        assert tuple(x.shape) == tuple(y.shape)
        torch.testing.assert_close(torch.as_tensor(x), y, atol=1e-4, rtol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(eager model, export directory, model.json contents) of the small model, exported once."""
    out = tmp_path_factory.mktemp("onnx") / "graph"
    model = build_tiny_model(*SMALL).eval()
    info = export_evad(model, (T, H, W), str(out), fmt="onnx", metadata={"note": "small"})
    return model, out, info


@pytest.mark.slow  # one ONNX export for the module: 15-40 s on a loaded 2-core CPU
def test_export_writes_onnx_graph_and_metadata(exported):
    model, out, info = exported
    assert (out / "model.onnx").is_file() and (out / "model.json").is_file()
    assert info["format"] == "onnx" and info["file"] == "model.onnx" and info["opset"] == ONNX_OPSET == 18
    assert info["input"]["shape"] == [3, T, H, W] and info["keep_rates"] == [0.7, 1.0] and info["note"] == "small"
    # The export's own check ran ONNX Runtime on a second clip and compared values, not only shapes.
    assert info["check_actors"] > 0 and info["max_abs_diff"] < 1e-4
    # Exporting switched the pruning layers to the exportable eq. 3 and back.
    assert {m.importance_impl for m in model.modules() if hasattr(m, "importance_impl")} == {"auto"}


@pytest.mark.slow  # one ONNX export for the module: 15-40 s on a loaded 2-core CPU
def test_graph_maps_3d_roi_align_to_aligned_onnx_roialign(exported):
    proto = onnx.load(str(exported[1] / "model.onnx"))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= MIN_ONNX_OPSET
    assert [i.name for i in proto.graph.input] == ["clip"]
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "action_scores"]
    nodes = [n for n in proto.graph.node if n.op_type == "RoiAlign"]
    assert nodes  # the action head's 3D RoIAlign (and the localization stage's RoI pooling)
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        # half_pixel == torchvision's aligned=True; avg over the 2x2 samples of each bin.
        assert attrs["coordinate_transformation_mode"] == b"half_pixel" and attrs["mode"] == b"avg"
    pooled = {onnx.helper.get_attribute_value(a) for n in nodes for a in n.attribute if a.name == "output_height"}
    assert 7 in pooled  # the action pooler's MODEL.EVAD.DECODER.POOLER_RESOLUTION of the tiny config
    assert any(n.op_type == "TopK" for n in proto.graph.node)  # token pruning inside the graph


@pytest.mark.slow  # one ONNX export for the module: 15-40 s on a loaded 2-core CPU
def test_onnx_runtime_equals_eager(exported):
    model, out, _ = exported
    graph, info = load_exported(str(out))
    assert isinstance(graph, OnnxRuntimeGraph) and graph.providers == ["CPUExecutionProvider"]
    counts = set()
    for seed in (3, 4, 5):
        clip = random_clip(seed=seed)
        got = graph(clip)
        _assert_same(got, eager_outputs(model, clip))
        counts.add(len(got[0]))
    assert max(counts) > 0


@pytest.mark.slow  # one ONNX export for the module: 15-40 s on a loaded 2-core CPU
def test_graph_runs_with_onnxruntime_alone(exported, tmp_path):
    model, out, _ = exported
    clip = random_clip(seed=21)
    np.save(tmp_path / "clip.npy", clip.numpy())
    script = f"""
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession({str(out / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
outs = s.run(None, {{"clip": np.load({str(tmp_path / 'clip.npy')!r})}})
np.savez({str(tmp_path / 'outs.npz')!r}, *outs)
assert not any(m.split('.')[0] in ('torch', 'torchvision', 'detectron2', 'evad_d2') for m in sys.modules), 'needs torch'
"""
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    with np.load(tmp_path / "outs.npz") as f:
        got = [torch.from_numpy(f[f"arr_{i}"]) for i in range(3)]
    _assert_same(got, eager_outputs(model, clip))


@pytest.mark.slow  # one ONNX export for the module: 15-40 s on a loaded 2-core CPU
def test_threshold_stays_dynamic(exported, tmp_path):
    """Shift the person logit's bias in the graph and in the model: the same graph returns no
    actor, then every proposal, as the eager model does."""
    model, out, _ = exported
    proto = onnx.load(str(out / "model.onnx"))
    (init,) = [i for i in proto.graph.initializer if i.name == PERSON_BIAS]
    bias = onnx.numpy_helper.to_array(init).copy()
    clip = random_clip(seed=6)
    counts = []
    for shift in (-20.0, 20.0):
        shifted = bias.copy()
        shifted[0] += shift
        init.CopyFrom(onnx.numpy_helper.from_array(shifted, PERSON_BIAS))
        graph = OnnxRuntimeGraph(proto.SerializeToString(), ["CPUExecutionProvider"])
        with torch.no_grad():
            dict(model.named_parameters())[PERSON_BIAS[len("model."):]][0] += shift
        try:
            got = graph(clip)
            _assert_same(got, eager_outputs(model, clip))
        finally:
            with torch.no_grad():
                dict(model.named_parameters())[PERSON_BIAS[len("model."):]][0] -= shift
        counts.append(len(got[0]))
    assert counts == [0, TINY_NUM_PROPOSALS]


@pytest.mark.slow  # one ONNX export for the module: 15-40 s on a loaded 2-core CPU
def test_graph_refuses_another_clip_size(exported):
    graph, _ = load_exported(str(exported[1]))
    with pytest.raises(ValueError, match=r"exported for clips of shape \(C, T, H, W\) = \[3, 8, 64, 96\] but got \[3, 8, 64, 64\]"):
        graph(random_clip(h=64, w=64))


def test_unsupported_settings_name_the_key(tmp_path):
    model = build_tiny_model(*SMALL).eval()
    with pytest.raises(ValueError, match=r"opset 15 \(--opset\).*from opset 16"):
        export_evad(model, (T, H, W), str(tmp_path / "a"), fmt="onnx", opset=15)
    model.backbone.net.set_pruning_score("random")
    with pytest.raises(ValueError, match="MODEL.EVAD.PRUNING_SCORE 'random' cannot be exported to ONNX"):
        check_onnx_exportable(ExportableEVAD(model, (T, H, W)), ONNX_OPSET)
    assert not (tmp_path / "a" / "model.onnx").exists()
    with pytest.raises(ImportError, match=r"needs the 'no_such_onnx_pkg' package .*pip install 'evad-d2\[onnx\]'"):
        require_onnx_package("no_such_onnx_pkg")


def test_providers():
    assert onnxruntime_providers("cpu") == ["CPUExecutionProvider"]
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    assert onnxruntime_providers("cuda") == expected


@pytest.mark.slow  # two runs of tools/export_model.py, one an ONNX export: ~30-60 s
def test_export_tool_onnx_format_and_opset_error(tmp_path):
    args = ["--config-file", TINY_CONFIG, "--input-size", T, H, W, "--format", "onnx"]
    res = run_tool("tools/export_model.py", *args, "--output", tmp_path / "bad", "--opset", "15", *SMALL)
    assert res.returncode == 2 and "--opset" in res.stderr and "from opset 16" in res.stderr
    res = run_tool("tools/export_model.py", *args, "--output", tmp_path / "g", *SMALL)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((tmp_path / "g" / "model.json").read_text())
    assert info["format"] == "onnx" and info["opset"] == ONNX_OPSET and (tmp_path / "g" / "model.onnx").is_file()
    assert info["max_abs_diff"] < 1e-4 and [c["id"] for c in info["classes"]] == list(range(1, 7))


@pytest.mark.slow  # one more ONNX export: 15-40 s
def test_official_mode_graph_equals_the_model(tmp_path):
    """Official mode ([0, w-1] clipping, empty boxes kept), boxes widened past the borders."""
    model = build_tiny_model(*SMALL, "MODEL.EVAD.OFFICIAL_MODE", "True", "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0",
                             tame=False).eval()
    with torch.no_grad():
        model.localization_head.stages[-1].bboxes_delta.bias[2] += 2.0  # dw + 2: wider than the clip
    info = export_evad(model, (T, H, W), str(tmp_path / "g"), fmt="onnx")
    assert info["official_mode"] is True and info["max_abs_diff"] < 1e-4
    graph, _ = load_exported(str(tmp_path / "g"))
    clip = random_clip(seed=1)
    got = graph(clip)
    assert len(got[0]) == TINY_NUM_PROPOSALS and float(got[0][:, 2].max()) == W - 1  # clipped at w - 1
    _assert_same(got, eager_outputs(model, clip))


@pytest.mark.slow  # an ONNX export attempt: 15-40 s
def test_opset_the_exporter_cannot_convert_to_is_refused(tmp_path):
    # torch 2.14 writes opset 18; its conversion to 16 fails on the Reduce* ops and leaves 18.
    with pytest.raises(ValueError, match=r"could not convert EVAD's graph to opset 16 \(it stays at opset 18"):
        export_evad(build_tiny_model(*SMALL).eval(), (T, H, W), str(tmp_path / "g"), fmt="onnx", opset=16)
    assert not (tmp_path / "g" / "model.onnx").exists()


@pytest.mark.slow  # an ONNX export: 15-40 s
def test_check_tolerance_is_applied(tmp_path):
    # ONNX Runtime rounds differently from torch (~1e-5 px on these boxes): a 1e-12 tolerance fails.
    with pytest.raises(RuntimeError, match=r"exported graph disagrees with the model: .* raise --check-atol"):
        export_evad(build_tiny_model(*SMALL).eval(), (T, H, W), str(tmp_path / "g"), fmt="onnx", check_atol=1e-12)
    assert not (tmp_path / "g" / "model.json").exists()
