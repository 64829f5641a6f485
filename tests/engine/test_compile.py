"""torch.compile for inference (evad_d2.engine.compilation, EVADPredictor's ``compile`` /
TEST.COMPILE): compiled in place (same module types, state-dict keys), results equal to eager."""
import pytest
import torch

from evad_d2.config import get_evad_cfg
from evad_d2.engine.compilation import COMPILED_PARTS, compile_model, is_compiled
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.testing import SHALLOW_TINY, TINY_CONFIG, build_tiny_model, random_clip

SMALL = list(SHALLOW_TINY)


def _outputs(model, clips):
    with torch.inference_mode():
        out = [model([{"clip": c}])[0]["instances"] for c in clips]
    return [(i.pred_boxes.tensor, i.scores, i.pred_action_scores) for i in out]


def _assert_same(got, expected):
    for a, b in zip(got, expected):
        for x, y in zip(a, b):
            assert x.shape == y.shape
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-5)


def test_compile_model_in_place_keeps_types_and_state_dict():
    model = build_tiny_model(*SMALL, "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0").eval()
    clips = [random_clip(seed=s) for s in (1, 2)]
    expected = _outputs(model, clips)
    keys, types = list(model.state_dict()), {n: type(getattr(model, n)) for n in COMPILED_PARTS}
    assert not is_compiled(model)
    # The "eager" backend runs TorchDynamo's capture without code generation: the plumbing, fast.
    assert compile_model(model, backend="eager") is model
    assert is_compiled(model)
    assert list(model.state_dict()) == keys and {n: type(getattr(model, n)) for n in COMPILED_PARTS} == types
    assert model.backbone.keep_rates == [0.7, 1.0]  # attributes read through as before
    got = _outputs(model, clips)
    _assert_same(got, expected)
    assert all(len(g[0]) == 8 for g in got)  # threshold 0: every proposal
    with pytest.raises(ValueError, match="has no submodule 'neck' to compile"):
        compile_model(model, parts=("neck",))


def test_predictor_compile_option_defaults_to_the_config():
    cfg = get_evad_cfg(TINY_CONFIG, SMALL)
    assert cfg.TEST.COMPILE is False
    assert not EVADPredictor(cfg).compiled and not is_compiled(EVADPredictor(cfg).model)
    on = get_evad_cfg(TINY_CONFIG, SMALL + ["TEST.COMPILE", "True"])
    predictor = EVADPredictor(on)  # compiling is lazy: nothing is compiled before the first clip
    assert predictor.compiled and is_compiled(predictor.model)
    assert not EVADPredictor(on, compile=False).compiled  # the argument overrides the config


@pytest.mark.slow  # TorchInductor compiles C++ kernels: 1-6 minutes on a loaded 2-core CPU
def test_compiled_predictor_equals_eager():
    cfg = get_evad_cfg(TINY_CONFIG, SMALL + ["MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.3"])
    torch.manual_seed(0)
    eager = EVADPredictor(cfg)
    torch.manual_seed(0)
    compiled = EVADPredictor(cfg, compile=True)
    compiled.model.load_state_dict(eager.model.state_dict())
    clips = [random_clip(seed=s).round().to(torch.uint8) for s in (3, 4)]
    counts = []
    for clip in clips:
        a, b = eager.predict_instances(clip), compiled.predict_instances(clip)
        _assert_same([(b.pred_boxes.tensor, b.scores, b.pred_action_scores)],
                     [(a.pred_boxes.tensor, a.scores, a.pred_action_scores)])
        counts.append(len(a))
    assert max(counts) > 0  # values compared, not only empty outputs
