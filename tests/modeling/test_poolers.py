"""RoI extension and 3D RoIAlign on hand-checked values."""
import pytest
import torch

from torchvision.ops import roi_align

from evad_d2.modeling import poolers
from evad_d2.modeling.poolers import ROIPooler3D, extend_boxes, roi_align_3d, roi_align_bin_max

# Separable RoIAlign against torchvision's: the same samples, other float summation orders (and
# whatever order the CPU's BLAS kernel picks). A bin is a weighted mean of at most 16 map values
# (|x| < 5 for these randn maps), so float32 rounding stays below 16 * 1.2e-7 * 5 ~ 1e-5 on any
# CPU; measured here: 3.6e-7. A wrong sample position or border rule moves bins by ~0.1.
SEPARABLE_ATOL = 1e-5


def test_extend_boxes_pads_each_side_by_half_ratio_of_inclusive_size():
    boxes = torch.tensor([[10.0, 20.0, 29.0, 59.0]])  # w = 19 (+1 = 20), h = 39 (+1 = 40)
    out = extend_boxes(boxes, (100, 200), (0.4, 0.2))
    # x: 0.4 * 20 / 2 = 4 each side; y: 0.2 * 40 / 2 = 4 each side.
    torch.testing.assert_close(out, torch.tensor([[6.0, 16.0, 33.0, 63.0]]))


def test_extend_boxes_clips_to_image_and_zero_ratio_is_identity():
    boxes = torch.tensor([[1.0, 1.0, 190.0, 90.0], [50.0, 40.0, 70.0, 60.0]])
    out = extend_boxes(boxes, torch.tensor([100, 200]), (0.4, 0.2))
    # Box 0: pad_x = 0.4 * 190 / 2 = 38, pad_y = 0.2 * 90 / 2 = 9 -> clipped to [0, 199] x [0, 99].
    torch.testing.assert_close(out[0], torch.tensor([0.0, 0.0, 199.0, 99.0]))
    # Box 1: pad_x = 0.4 * 21 / 2 = 4.2, pad_y = 0.2 * 21 / 2 = 2.1.
    torch.testing.assert_close(out[1], torch.tensor([45.8, 37.9, 74.2, 62.1]))
    torch.testing.assert_close(extend_boxes(boxes, (100, 200), (0.0, 0.0)), boxes)


def test_extend_boxes_grows_area_by_1_68_for_large_boxes():
    boxes = torch.tensor([[400.0, 400.0, 1399.0, 1399.0]])
    out = extend_boxes(boxes, (4000, 4000), (0.4, 0.2))
    w, h = out[0, 2] - out[0, 0] + 1, out[0, 3] - out[0, 1] + 1
    assert abs((w * h).item() / 1000**2 - 1.68) < 1e-3


def test_extend_boxes_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boxes must be"):
        extend_boxes(torch.zeros(4), (10, 10))


def test_roi_align_3d_constant_slices_give_temporal_mean():
    values = torch.tensor([1.0, 2.0, 6.0])  # one constant per temporal slice
    feat = values.view(1, 1, 3, 1, 1).expand(1, 2, 3, 8, 8).clone()
    feat[:, 1] *= 2  # channel 1 = 2 x channel 0
    out = roi_align_3d(feat, [torch.tensor([[16.0, 16.0, 80.0, 112.0]])], spatial_scale=1 / 16)
    torch.testing.assert_close(out, torch.tensor([[3.0, 6.0]]))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["separable", "torchvision"])
def test_roi_align_3d_takes_max_over_bins_and_mean_over_time(requires_grad):
    # Value at column j of slice t is j + 10 t. With aligned=True, a sample at continuous x reads
    # x - 0.5 (pixel centres sit at j + 0.5). Box x in [1, 3] at scale 1, 2x2 bins, 2 samples per
    # bin side: samples at 0.75, 1.25 | 1.75, 2.25 -> bin means 1 and 2 -> max 2.
    cols = torch.arange(6.0).view(1, 1, 1, 1, 6)
    t = torch.arange(3.0).view(1, 1, 3, 1, 1)
    feat = (cols + 10 * t).expand(1, 1, 3, 6, 6).contiguous().requires_grad_(requires_grad)
    box = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    out = roi_align_3d(feat, [box], spatial_scale=1.0, output_size=2, sampling_ratio=2).detach()
    torch.testing.assert_close(out, torch.tensor([[2.0 + 10.0]]))  # mean over t of 2 + 10 t
    # The same box in a 2x larger image at scale 1/2 reads the same samples.
    out2 = roi_align_3d(feat, [box * 2], spatial_scale=0.5, output_size=2, sampling_ratio=2).detach()
    torch.testing.assert_close(out2, out)


def test_roi_align_3d_keeps_box_and_clip_order():
    feat = torch.stack([torch.full((2, 4, 4), 1.0), torch.full((2, 4, 4), 5.0)])[:, None]  # (2, 1, 2, 4, 4)
    feat[0, 0, :, :, 2:] = 3.0  # clip 0: right half is 3
    boxes = [
        torch.tensor([[0.0, 0.0, 16.0, 64.0], [40.0, 0.0, 64.0, 64.0]]),  # left, right of clip 0
        torch.tensor([[0.0, 0.0, 64.0, 64.0]]),
    ]
    out = roi_align_3d(feat, boxes, spatial_scale=1 / 16, output_size=2, sampling_ratio=2)
    torch.testing.assert_close(out, torch.tensor([[1.0], [3.0], [5.0]]))
    empty = roi_align_3d(feat, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert empty.shape == (0, 1)


def _hard_boxes(gen, n, height, width, scale):
    """Boxes partly or wholly off the map, of zero size, duplicated, reversed: RoIAlign's edge rules."""
    size = torch.tensor([width, height]) / scale
    corner = torch.rand(n, 2, generator=gen) * size * 1.6 - 0.3 * size
    extent = torch.rand(n, 2, generator=gen) * size
    boxes = torch.cat([corner, corner + extent], 1)
    if n >= 4:
        boxes[1] = boxes[0]  # duplicate
        boxes[2, 2:] = boxes[2, :2]  # zero size
        boxes[3] = torch.cat([size * 1.2, size * 1.5])  # wholly outside
    if n >= 5:
        boxes[4] = boxes[4, [2, 3, 0, 1]]  # x2 < x1, y2 < y1
    return boxes


@pytest.mark.parametrize("seed", range(4))
def test_separable_bin_max_equals_torchvision_roi_align_on_hard_cases(seed):
    gen = torch.Generator().manual_seed(seed)
    for height, width, output_size, sampling_ratio, scale in [
        (1, 1, 1, 1, 1.0), (7, 5, 3, 2, 0.5), (14, 14, 7, 2, 1 / 16), (9, 13, 4, 0, 0.25), (3, 8, 5, 3, 1.0),
    ]:
        feat = torch.randn(2, 5, height, width, generator=gen)
        boxes = [_hard_boxes(gen, 6, height, width, scale), _hard_boxes(gen, 0, height, width, scale)]
        rois = torch.cat([torch.zeros(6, 1), boxes[0]], 1)
        expected = roi_align(feat, rois, output_size, scale, sampling_ratio, aligned=True).amax(dim=(-2, -1))
        got = roi_align_bin_max(feat, boxes, output_size, scale, sampling_ratio)
        torch.testing.assert_close(got, expected, rtol=0, atol=SEPARABLE_ATOL)


def test_roi_align_3d_calls_torchvision_only_for_gradients_traces_and_other_devices(monkeypatch):
    calls = []

    def counting_roi_align(*args, **kwargs):
        calls.append(1)
        return roi_align(*args, **kwargs)

    monkeypatch.setattr(poolers, "roi_align", counting_roi_align)
    feat = torch.randn(1, 3, 2, 5, 5)
    boxes = [torch.tensor([[4.0, 4.0, 60.0, 70.0]])]
    with torch.no_grad():
        fast = roi_align_3d(feat, boxes)
    assert not calls
    slow = roi_align_3d(feat.clone().requires_grad_(True), boxes)
    assert len(calls) == 1
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=SEPARABLE_ATOL)
    with torch.no_grad():
        traced = torch.jit.trace(lambda f: roi_align_3d(f, boxes), (feat,))
    assert "torchvision::roi_align" in str(traced.graph)
    calls.clear()
    with torch.no_grad():  # a map off the CPU: the meta device stands in (shapes only)
        on_meta = roi_align_3d(feat.to("meta"), [b.to("meta") for b in boxes])
    assert len(calls) == 1 and on_meta.shape == fast.shape


def test_roi_align_3d_backpropagates_to_features():
    feat = torch.randn(1, 3, 2, 5, 5, requires_grad=True)
    roi_align_3d(feat, [torch.tensor([[4.0, 4.0, 60.0, 70.0]])]).sum().backward()
    assert feat.grad.abs().sum() > 0


def test_roi_pooler_3d_extends_then_pools_and_owns_no_parameters():
    pooler = ROIPooler3D(2, stride=16, sampling_ratio=2, roi_extend=(0.4, 0.2))
    assert dict(pooler.state_dict()) == {}
    feat = torch.randn(2, 3, 4, 6, 8)
    boxes = torch.tensor([[[10.0, 12.0, 60.0, 80.0]], [[0.0, 0.0, 127.0, 95.0]]])
    sizes = torch.tensor([[96.0, 128.0], [96.0, 128.0]])
    extended = [extend_boxes(b, s, (0.4, 0.2)) for b, s in zip(boxes, sizes)]
    expected = roi_align_3d(feat, extended, 1 / 16, 2, 2).view(2, 1, 3)
    torch.testing.assert_close(pooler(feat, boxes, sizes), expected, rtol=0, atol=0)
