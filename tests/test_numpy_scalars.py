"""numpy scalars are accepted wherever Python numbers are, with the same results
(bitwise): sizes, scales, sampling ratios, flags, pooler scales and level mapping."""

import pytest
import torch

import roiops

np = pytest.importorskip("numpy")

torch.manual_seed(0)
X = torch.randn(2, 3, 12, 14)
ROIS = torch.tensor([[0, 1.3, 2.2, 15.7, 12.1], [1, -3.3, 4.2, 30.1, 18.4]])
SCALE = np.float32(0.5)  # exactly 0.5 as a Python float too


CASES = {
    "roi_align": (
        lambda: roiops.roi_align(X, ROIS, np.int64(3), SCALE, np.int64(2), np.bool_(True), mode="max"),
        lambda: roiops.roi_align(X, ROIS, 3, 0.5, 2, True, mode="max"),
    ),
    "roi_align_pair": (
        lambda: roiops.roi_align(X, ROIS, (np.int32(2), np.uint8(3)), np.float64(0.5)),
        lambda: roiops.roi_align(X, ROIS, (2, 3), 0.5),
    ),
    "roi_warp": (
        lambda: roiops.roi_warp(X, ROIS, np.int16(3), SCALE, np.int64(-1)),
        lambda: roiops.roi_warp(X, ROIS, 3, 0.5, -1),
    ),
    "roi_pool": (
        lambda: roiops.roi_pool(X, ROIS, np.int64(3), SCALE, mode="avg"),
        lambda: roiops.roi_pool(X, ROIS, 3, 0.5, mode="avg"),
    ),
    "modules": (
        lambda: roiops.RoIAlign(np.int64(2), SCALE, np.int64(2))(X, ROIS) + roiops.RoIPool(np.int64(2), SCALE)(X, ROIS),
        lambda: roiops.RoIAlign(2, 0.5, 2)(X, ROIS) + roiops.RoIPool(2, 0.5)(X, ROIS),
    ),
    "pooler": (
        lambda: roiops.MultiScaleRoIPooler(np.int64(3), [np.float32(0.5), np.float64(0.25)], "roi_warp",
                                           np.int64(2), canonical_size=np.float32(16),
                                           canonical_level=np.int64(1))([X, X[:, :, ::2, ::2]], ROIS),
        lambda: roiops.MultiScaleRoIPooler(3, [0.5, 0.25], "roi_warp", 2, canonical_size=16.0,
                                           canonical_level=1)([X, X[:, :, ::2, ::2]], ROIS),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_scalars_match_python_numbers(name):
    with_numpy, with_python = CASES[name]
    torch.testing.assert_close(with_numpy(), with_python(), rtol=0, atol=0)


def test_numpy_bool_is_not_a_size():
    with pytest.raises(TypeError, match="output_size"):
        roiops.roi_align(X, ROIS, np.bool_(True))
