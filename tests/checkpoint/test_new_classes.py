"""Fine-tuning from a checkpoint trained on other classes (MODEL.EVAD.CHECKPOINT.NEW_ACTION_CLASSES):
the action classifiers start fresh, every other tensor loads, and the load says which."""

import pytest
import torch
from detectron2.modeling import build_model

from evad_d2 import get_evad_cfg
from evad_d2.checkpoint import CheckpointFormatError, EVADCheckpointer
from evad_d2.testing import TINY_CONFIG as TINY


def _model(*opts):
    cfg = get_evad_cfg(TINY, opts)
    return cfg, build_model(cfg).eval()


@pytest.mark.parametrize("head", ["decoder", "linear"])
def test_checkpoint_with_other_classes_loads_all_but_the_classifiers(tmp_path, head):
    torch.manual_seed(0)
    _, trained = _model("MODEL.EVAD.ACTION_HEAD", head)  # 6 classes
    EVADCheckpointer(trained, str(tmp_path)).save("trained")
    saved = trained.state_dict()

    torch.manual_seed(1)
    cfg, model = _model("MODEL.EVAD.ACTION_HEAD", head, "MODEL.EVAD.NUM_ACTION_CLASSES", "3",
                        "MODEL.EVAD.CHECKPOINT.NEW_ACTION_CLASSES", "True")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = EVADCheckpointer(cfg=cfg, model=model)
    checkpointer.load(str(tmp_path / "trained.pth"))
    info = checkpointer.last_load

    classifiers = sorted(k for k in fresh if ".action_logits." in f".{k}")
    assert classifiers and [k for k, _, _ in info["reinitialised"]] == classifiers
    for key, ckpt_shape, model_shape in info["reinitialised"]:
        assert ckpt_shape == tuple(saved[key].shape) and model_shape == tuple(fresh[key].shape)
        assert model_shape[0] == 3 and ckpt_shape[0] == 6
    assert info["missing"] == [] and info["unexpected"] == [] and info["incorrect_shapes"] == []
    after = model.state_dict()
    for key, value in after.items():
        expected = fresh[key] if key in classifiers else saved[key]
        assert torch.equal(value, expected), key


def test_without_the_switch_a_class_count_change_is_an_error_naming_the_classifier(tmp_path):
    _, trained = _model()
    EVADCheckpointer(trained, str(tmp_path)).save("trained")
    cfg, model = _model("MODEL.EVAD.NUM_ACTION_CLASSES", "3")
    with pytest.raises(CheckpointFormatError, match=r"action_logits\.weight: checkpoint \(6, 64\) vs model \(3, 64\)"):
        EVADCheckpointer(cfg=cfg, model=model).load(str(tmp_path / "trained.pth"))
