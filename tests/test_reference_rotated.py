"""The rotated RoIAlign contract (docs/SEMANTICS.md, "The rest of the family"), as
roiops.reference.roi_align_rotated states it, checked against formulations that do not
share its code: roi_align at angle 0 and a quarter turn, the direction of the rotation
on a ramp, grid_sample inside the map, finite differences for the box gradient."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from roiops import _validation, reference


def rotated_rois(gen, K, N, H, W, scale, min_side=1.0):
    """K rotated boxes (batch, cx, cy, w, h, angle) over an H x W map at ``scale``, each at
    least ``min_side`` feature pixels wide and tall, angles in [-400, 400] degrees."""
    u = torch.rand(K, 6, generator=gen, dtype=torch.float64)
    rois = torch.empty(K, 6, dtype=torch.float64)
    rois[:, 0] = (u[:, 0] * N).floor()
    rois[:, 1] = u[:, 1] * W / scale
    rois[:, 2] = u[:, 2] * H / scale
    rois[:, 3] = (min_side + u[:, 3] * W / 2) / scale
    rois[:, 4] = (min_side + u[:, 4] * H / 2) / scale
    rois[:, 5] = (u[:, 5] - 0.5) * 800
    return rois


def random_problem(seed, shape, K, scale):
    """A float64 map of ``shape`` and K rotated boxes over it."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    return x, rotated_rois(gen, K, shape[0], shape[2], shape[3], scale)


def corners(rois):
    """The axis-aligned (batch, x1, y1, x2, y2) box of each rotated box at angle 0."""
    b, cx, cy, w, h = rois[:, :5].unbind(1)
    return torch.stack([b, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


problems = st.tuples(st.integers(0, 2**31 - 1), st.sampled_from([1.0, 0.5, 0.25]), st.sampled_from([-1, 1, 2, 3]),
                     st.booleans(), st.integers(1, 4), st.integers(1, 4))


@given(problems)
def test_angle_zero_is_roi_align_on_the_corners(problem):
    seed, scale, sr, aligned, ph, pw = problem
    x, rois = random_problem(seed, (2, 3, 9, 11), 6, scale)
    rois[:, 5] = 0
    out = reference.roi_align_rotated(x, rois, (ph, pw), scale, sr, aligned)
    expected = reference.roi_align(x, corners(rois), (ph, pw), scale, sr, aligned)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@given(problems)
def test_a_quarter_turn_is_roi_align_on_the_turned_box_with_its_bins_turned(problem):
    """At 90 degrees bin (ph, pw) holds the samples that roi_align of the box with w and h
    swapped puts in bin (PW - 1 - pw, ph)."""
    seed, scale, sr, aligned, ph, pw = problem
    x, rois = random_problem(seed, (1, 2, 10, 10), 5, scale)
    rois[:, 5] = 90
    out = reference.roi_align_rotated(x, rois, (ph, pw), scale, sr, aligned)
    turned = rois[:, [0, 1, 2, 4, 3]]  # w and h swapped
    expected = reference.roi_align(x, corners(turned), (pw, ph), scale, sr, aligned)
    torch.testing.assert_close(out, expected.flip(2).transpose(2, 3), rtol=0, atol=1e-9)


def test_counter_clockwise_turns_the_width_up_the_image():
    """On a map whose value is the row index, a box turned 90 degrees counter-clockwise
    (as seen with rows going down) has its width pointing up: values fall along pw;
    clockwise, they rise."""
    rows = torch.arange(20, dtype=torch.float64)[:, None].expand(20, 20)[None, None]
    rois = torch.tensor([[0, 10.0, 10.0, 12.0, 2.0, 90.0]], dtype=torch.float64)
    ccw = reference.roi_align_rotated(rows, rois, (1, 4), 1.0, 2, True)[0, 0, 0]
    cw = reference.roi_align_rotated(rows, rois, (1, 4), 1.0, 2, True, clockwise=True)[0, 0, 0]
    torch.testing.assert_close(ccw, torch.tensor([14.0, 11.0, 8.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(cw, ccw.flip(0))


@given(problems)
def test_clockwise_negates_the_angle_and_full_turns_change_nothing(problem):
    seed, scale, sr, aligned, ph, pw = problem
    x, rois = random_problem(seed, (2, 2, 8, 9), 5, scale)
    out = reference.roi_align_rotated(x, rois, (ph, pw), scale, sr, aligned)
    negated = rois.clone()
    negated[:, 5] = -rois[:, 5]
    cw = reference.roi_align_rotated(x, negated, (ph, pw), scale, sr, aligned, clockwise=True)
    assert torch.equal(out, cw)
    turned = rois.clone()
    turned[:, 5] = rois[:, 5] + 720
    torch.testing.assert_close(reference.roi_align_rotated(x, turned, (ph, pw), scale, sr, aligned), out,
                               rtol=0, atol=1e-9)


@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 3]), st.integers(1, 3))
def test_matches_grid_sample_where_every_sample_is_inside_the_map(seed, sr, size):
    """Inside the map the point rule is plain bilinear interpolation: grid_sample with
    align_corners=True at the sample points, averaged per bin."""
    gen = torch.Generator().manual_seed(seed)
    H, W = 24, 30
    x = torch.randn(1, 3, H, W, generator=gen, dtype=torch.float64)
    cx, cy = 12 + 4 * torch.rand(1, generator=gen).item(), 11.3
    w, h, angle = 9.0 + 3 * torch.rand(1, generator=gen).item(), 6.5, 360 * torch.rand(1, generator=gen).item()
    rois = torch.tensor([[0, cx, cy, w, h, angle]], dtype=torch.float64)
    out = reference.roi_align_rotated(x, rois, size, 1.0, sr, True)
    t = math.radians(angle)
    points = []  # [size, size, sr * sr] (y, x) in pixel coordinates
    for ph in range(size):
        for pw in range(size):
            for iy in range(sr):
                for ix in range(sr):
                    yy = -h / 2 + (ph + (iy + 0.5) / sr) * h / size
                    xx = -w / 2 + (pw + (ix + 0.5) / sr) * w / size
                    points.append((yy * math.cos(t) - xx * math.sin(t) + cy - 0.5,
                                   yy * math.sin(t) + xx * math.cos(t) + cx - 0.5))
    p = torch.tensor(points, dtype=torch.float64)
    assert (p[:, 0] > 0).all() and (p[:, 0] < H - 1).all() and (p[:, 1] > 0).all() and (p[:, 1] < W - 1).all()
    grid = torch.stack([p[:, 1] / (W - 1) * 2 - 1, p[:, 0] / (H - 1) * 2 - 1], 1)[None, None]
    sampled = torch.nn.functional.grid_sample(x, grid, align_corners=True)  # [1, C, 1, n]
    expected = sampled.reshape(3, size, size, sr * sr).mean(-1)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("aligned", [True, False])
def test_box_gradient_matches_finite_differences(aligned):
    """Through the centre, the size and the angle (a fixed sampling ratio: an adaptive
    grid jumps with the size)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 12, 13, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0, 6.3, 5.1, 7.2, 4.4, 31.0], [1, 4.9, 6.6, 3.3, 8.1, -127.0]], dtype=torch.float64)

    def pooled(params):
        return reference.roi_align_rotated(x, torch.cat([rois[:, :1], params], 1), 3, 1.0, 2, aligned)

    assert torch.autograd.gradcheck(pooled, rois[:, 1:].clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda f: reference.roi_align_rotated(f, rois, 3, 1.0, 2, aligned),
                                    x.clone().requires_grad_())


def test_non_finite_and_empty_boxes_pool_to_zero():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    rois = torch.tensor([[0, float("nan"), 3, 2, 2, 0], [0, 3, 3, float("inf"), 2, 0], [0, 3, 3, 2, 2, float("inf")],
                         [0, 3, 3, -2, 2, 30], [0, 3, 3, 2, 0, 30]], dtype=torch.float64)
    assert torch.equal(reference.roi_align_rotated(x, rois, 2, 1.0, -1, True), torch.zeros(5, 2, 2, 2,
                                                                                           dtype=torch.float64))


def test_boxes_as_a_list_per_image_and_their_checks():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 8, 8, generator=gen)
    rois = rotated_rois(gen, 4, 2, 8, 8, 1.0).float()
    rois[:, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    listed = [rois[:2, 1:], rois[2:, 1:]]
    assert torch.equal(reference.roi_align_rotated(x, listed, 2), reference.roi_align_rotated(x, rois, 2))
    with pytest.raises(_validation.BoxesShapeError, match=r"\[K, 6\] Tensor \(batch_index, cx, cy, w, h, angle\)"):
        reference.roi_align_rotated(x, rois[:, :5], 2)
    with pytest.raises(_validation.BoxesShapeError, match=r"boxes\[1\] must be a \[L, 5\] Tensor"):
        reference.roi_align_rotated(x, [rois[:2, 1:], rois[2:, 1:5]], 2)
