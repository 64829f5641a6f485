"""EVADPredictor on clips: test-time preprocessing, agreement with the model and the evaluation mapper, weights, bad input."""
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from torch.utils._python_dispatch import TorchDispatchMode

from evad_d2.data import ClipDatasetMapper
from evad_d2.data.transforms import apply_transform_to_clip, resize_uint8_opencv
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.testing import tiny_cfg


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in bytes) that any torch operation allocates while active
    (views of their inputs, e.g. a permute, allocate nothing and are not counted)."""

    def __init__(self):
        super().__init__()
        self.nbytes, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        storages = {a.untyped_storage().data_ptr() for a in inputs}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in storages:
                if t.untyped_storage().nbytes() > self.nbytes:
                    self.nbytes, self.shape = t.untyped_storage().nbytes(), (tuple(t.shape), t.dtype)
        return out


@pytest.mark.parametrize("official", [False, True])
def test_preprocess_memory_follows_the_model_input_not_the_video(official):
    predictor = EVADPredictor(tiny_cfg("MODEL.EVAD.OFFICIAL_MODE", official, keep_all_proposals=True))
    frames = np.random.default_rng(0).integers(0, 256, (8, 360, 640, 3), dtype=np.uint8)
    with _LargestTensor() as largest:
        out = predictor.preprocess(frames)
    assert out["clip"].shape == (3, 8, 64, 114) and out["clip"].dtype == torch.float32
    # At most one full-resolution frame as float32 (2.8 MB), never the clip (8 frames, 22 MB; before
    # the fix the clip became float before resizing, and a 16-frame 4K clip peaked at 4.3 GB).
    one_frame = 3 * 360 * 640 * 4
    assert largest.nbytes <= one_frame, largest.shape
    if official:  # uint8 all the way: the largest tensor is the output or the (3, 64, 640) int32 rows
        assert largest.nbytes <= max(out["clip"].nbytes, 3 * 64 * 640 * 4), largest.shape


def test_uint8_preprocess_equals_the_float_resize_of_the_clip(predictor):
    frames = np.random.default_rng(1).integers(0, 256, (8, 90, 70, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float()
    ref = torch.nn.functional.interpolate(
        x.transpose(0, 1), size=(82, 64), mode="bilinear", align_corners=False, antialias=True
    ).transpose(0, 1)
    # Resizing uint8 frames one at a time changes no value of the default (float) resize.
    assert torch.equal(predictor.preprocess(frames)["clip"], ref)
    assert torch.equal(predictor.preprocess(x)["clip"], ref)


def test_opencv_uint8_resize_by_hand():
    # [[0, 255], [255, 0]] to 3x3. Source position of output i: (i + 0.5) * 2/3 - 0.5 = -1/6, 1/2, 7/6.
    # Columns: left of the image -> weights (2048, 0) on column 0; 1/2 -> (1024, 1024); 7/6 -> column 1.
    # Rows keep their weights: row -1/6 reads row 0 twice with round(2048/6) = 341 and 1707.
    # Vertical pass ((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16), then (+ 2) >> 2:
    #   (0, 1): S = 255 * 1024 = 261120 in both rows: 16320*341 >> 16 = 84, 16320*1707 >> 16 = 425,
    #           (84 + 425 + 2) >> 2 = 127 (a float bilinear gives 127.5);
    #   (0, 2): S = 522240: 32640*341 >> 16 = 169, 32640*1707 >> 16 = 850, (1019 + 2) >> 2 = 255;
    #   (1, 1): both rows S = 261120 with weights 1024: (255 + 255 + 2) >> 2 = 128.
    image = torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8)
    expected = [[0, 127, 255], [128, 128, 128], [255, 127, 0]]
    assert resize_uint8_opencv(image, (3, 3)).tolist() == expected
    # Leading dimensions are independent images (channels, frames).
    stacked = resize_uint8_opencv(torch.stack([image, 255 - image])[:, None], (3, 3))
    assert stacked.shape == (2, 1, 3, 3) and stacked[1, 0].tolist() == [[255, 127, 0], [128, 128, 128], [0, 127, 255]]
    assert torch.equal(resize_uint8_opencv(image, (2, 2)), image)  # same size: a copy
    # The default float bilinear of the same image.
    float_resize = apply_transform_to_clip(T.ResizeTransform(2, 2, 3, 3), image.float().view(1, 1, 2, 2))
    assert float_resize[0, 0, 0, 1] == 127.5
    with pytest.raises(TypeError, match="uint8"):
        apply_transform_to_clip(T.ResizeTransform(2, 2, 3, 3), image.float().view(1, 1, 2, 2), interpolation="opencv")


def test_opencv_uint8_resize_equals_values_recorded_from_opencv():
    # cv2.resize(..., interpolation=cv2.INTER_LINEAR), OpenCV 4.5.5 and 5.0 (same values).
    a = torch.tensor([[0, 37, 74, 111], [148, 185, 222, 3], [40, 77, 114, 151]], dtype=torch.uint8)
    assert resize_uint8_opencv(a, (5, 3)).tolist() == [
        [6, 55, 105], [65, 115, 79], [154, 204, 39], [89, 139, 103], [46, 95, 145]
    ]
    b = torch.tensor([[3, 250, 17], [90, 1, 255], [128, 64, 32], [7, 200, 100]], dtype=torch.uint8)
    assert resize_uint8_opencv(b, (2, 5)).tolist() == [[47, 78, 126, 132, 136], [68, 93, 132, 92, 66]]


@pytest.mark.parametrize("official", [False, True])
def test_evaluation_mapper_prepares_clips_as_the_predictor(official):
    cfg = tiny_cfg("MODEL.EVAD.OFFICIAL_MODE", official, keep_all_proposals=True)
    mapper = ClipDatasetMapper(cfg, is_train=False)
    assert mapper.interpolation == ("opencv" if official else "bilinear")
    frames = np.random.default_rng(4).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    mapper.read_frames = lambda d: frames
    out = mapper({"video_id": "v", "timestamp": 902, "height": 48, "width": 64})
    assert torch.equal(out["clip"], EVADPredictor(cfg).preprocess(frames)["clip"])


def test_predictor_in_official_mode_resizes_as_opencv_and_clips_at_w_minus_1():
    torch.manual_seed(0)
    predictor = EVADPredictor(tiny_cfg("MODEL.EVAD.OFFICIAL_MODE", True, keep_all_proposals=True))
    frames = np.random.default_rng(2).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    got = predictor.preprocess(frames)["clip"]
    expected = resize_uint8_opencv(torch.from_numpy(frames).permute(3, 0, 1, 2), (64, 85)).float()
    assert torch.equal(got, expected)
    # A float clip of whole numbers is the same clip; fractional values cannot be resized as uint8.
    assert torch.equal(predictor.preprocess(torch.from_numpy(frames).permute(3, 0, 1, 2).float())["clip"], expected)
    with pytest.raises(ValueError, match="fractional values"):
        predictor.preprocess(torch.from_numpy(frames).permute(3, 0, 1, 2).float() + 0.5)
    inst = predictor.predict_instances(frames)
    assert len(inst) == 8  # threshold 0 (>=): every proposal, empty boxes included
    # Clipped at 84 x 63 in the 64 x 85 clip, then scaled by 64/85 and 48/64.
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 84 * 64 / 85 + 1e-4).all() and (boxes[:, 1::2] <= 63 * 48 / 64 + 1e-4).all()


def test_predictor_on_a_clip_matches_the_model_on_the_resized_clip(predictor):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    actors = predictor(clip)
    assert 1 <= len(actors) <= 8  # threshold 0: every proposal with a non-empty box
    scores = [a["person_score"] for a in actors]
    assert scores == sorted(scores, reverse=True)
    # Reference: resize by hand to the test short side (64 -> 64 x 85), ask for 48 x 64 boxes.
    x = torch.from_numpy(clip).permute(3, 0, 1, 2).float()
    x = torch.nn.functional.interpolate(
        x.transpose(0, 1), size=(64, 85), mode="bilinear", align_corners=False
    ).transpose(0, 1)
    with torch.no_grad():
        ref = predictor.model([{"clip": x, "height": 48, "width": 64}])[0]["instances"]
    assert len(ref) == len(actors)
    order = torch.argsort(ref.scores, descending=True)
    np.testing.assert_allclose([a["box"] for a in actors], ref.pred_boxes.tensor[order].numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, ref.scores[order].numpy(), atol=1e-6)
    for a, i in zip(actors, order.tolist()):
        full = ref.pred_action_scores[i].numpy()
        np.testing.assert_allclose(a["action_scores"], full, atol=1e-6)
        top = np.argsort(-full)[:3]
        assert [name for name, _ in a["actions"]] == [f"action_{c + 1}" for c in top]
        assert a["action_ids"] == [int(c) + 1 for c in top]
        np.testing.assert_allclose([s for _, s in a["actions"]], full[top], atol=1e-6)
        x1, y1, x2, y2 = a["box"]
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 48
    # A (3, T, H, W) tensor gives the same answer.
    same = predictor(torch.from_numpy(clip).permute(3, 0, 1, 2).float())
    np.testing.assert_allclose([a["box"] for a in same], [a["box"] for a in actors], atol=1e-4)


def test_predictor_loads_model_weights(predictor, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"model": predictor.model.state_dict()}, path)
    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    loaded = EVADPredictor(tiny_cfg("MODEL.WEIGHTS", str(path), keep_all_proposals=True))
    for k, v in predictor.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert not loaded.model.training


def test_predictor_rejects_bad_clips(predictor):
    with pytest.raises(ValueError, match="INPUT.NUM_FRAMES"):
        predictor(np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        predictor(np.zeros((8, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="2 class names"):
        EVADPredictor(tiny_cfg(keep_all_proposals=True), class_names=["a", "b"])


@pytest.mark.parametrize("key, value", [("INPUT.SAMPLING_RATE", 0), ("MODEL.EVAD.NUM_ACTION_CLASSES", -3)])
def test_predictor_checks_a_hand_built_config_naming_the_key(key, value):
    """A config made with add_evad_config + merges (not get_evad_cfg) is checked before building."""
    from evad_d2.config import ConfigValueError

    with pytest.raises(ConfigValueError, match=rf"config key {key} = {value} is not allowed"):
        EVADPredictor(tiny_cfg(key, value, keep_all_proposals=True))
