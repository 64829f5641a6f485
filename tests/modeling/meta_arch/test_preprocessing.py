"""EVAD's clip preprocessing: pixel normalisation and padding (as detectron2's ImageList), and the
model device."""
import pytest
import torch
from detectron2.structures import ImageList

from evad_d2.testing import TINY_CLIP, build_tiny_model, Capture, random_clip

T, H, W = TINY_CLIP


def backbone_input(model, clips):
    with torch.no_grad(), Capture(model.backbone.net, pre=True) as net:
        model([{"clip": c} for c in clips])
    return net.calls[0][0]


def test_pixel_normalisation_and_padding():
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 5.0]
    model = build_tiny_model("MODEL.PIXEL_MEAN", mean, "MODEL.PIXEL_STD", std).eval()
    mean_t = torch.tensor(mean).view(3, 1, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1, 1)

    # A clip of the mean colour is the zero input, like the padding next to a smaller clip.
    x = backbone_input(model, [mean_t.expand(3, T, H, W).clone(), mean_t.expand(3, T, 48, 80).clone()])
    assert x.shape == (2, 3, T, 64, 96)
    assert torch.equal(x, torch.zeros_like(x))

    clip = random_clip(seed=11)
    x = backbone_input(model, [clip, torch.zeros(3, T, 48, 80, dtype=torch.uint8)])
    torch.testing.assert_close(x[0], (clip - mean_t) / std_t)
    # Zeros normalise to -mean/std per channel; the padding stays 0.
    torch.testing.assert_close(x[1, :, :, :48, :80], (-mean_t / std_t).expand(3, T, 48, 80))
    assert (x[1, :, :, 48:] == 0).all() and (x[1, :, :, :, 80:] == 0).all()

    with pytest.raises(ValueError, match="PIXEL_MEAN"):
        build_tiny_model("MODEL.PIXEL_MEAN", [1.0, 2.0], "MODEL.PIXEL_STD", std)


def test_device_is_the_buffers_device():
    model = build_tiny_model()
    assert model.device == model.pixel_mean.device == torch.device("cpu")
    model.to("meta")
    assert model.device.type == "meta" and model.pixel_std.device.type == "meta"


def test_clip_padding_equals_detectron2_image_list():
    from evad_d2.modeling.meta_arch.evad import _pad_clips

    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(3, 4, h, w, generator=g) for h, w in ((30, 50), (45, 20), (32, 48))]
    for d in (0, 1, 16):
        ours, ref = _pad_clips(clips, d), ImageList.from_tensors(clips, d)
        assert ours.tensor.shape == ref.tensor.shape == (3, 3, 4, 48 if d == 16 else 45, 64 if d == 16 else 50)
        assert torch.equal(ours.tensor, ref.tensor)
        assert [tuple(s) for s in ours.image_sizes] == [tuple(int(v) for v in s) for s in ref.image_sizes]
