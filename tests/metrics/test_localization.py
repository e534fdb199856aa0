"""Box math on hand-made boxes and heatmaps, with the values computed by hand in comments."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_bench.metrics import localization as loc


def test_iou_and_iobb_hand_computed():
    a, b = (0, 0, 10, 10), (5, 5, 10, 10)
    # overlap [5, 10) x [5, 10) = 25; union 100 + 100 - 25 = 175
    assert loc.iou(a, b) == pytest.approx(25 / 175)
    assert loc.iobb(a, b) == pytest.approx(25 / 100)
    inner, outer = (2, 2, 4, 4), (0, 0, 10, 10)
    assert loc.iobb(inner, outer) == 1.0  # detection inside the lesion: full IoBB ...
    assert loc.iou(inner, outer) == pytest.approx(16 / 100)  # ... but small IoU
    assert loc.iobb(outer, inner) == pytest.approx(16 / 100)  # IoBB is not symmetric
    assert loc.iou((0, 0, 10, 10), (10, 0, 5, 5)) == 0.0  # touching edges share no area
    assert loc.iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert loc.iou((3, 4, 0, 0), (3, 4, 0, 0)) == 0.0 and loc.iobb((3, 4, 0, 0), outer) == 0.0
    # float coordinates as in BBox_List_2017
    assert loc.iou((225.08, 547.02, 86.76, 79.19), (225.08, 547.02, 86.76, 79.19)) == pytest.approx(1.0)


def test_vectorised_variants_broadcast():
    det = np.array([[0, 0, 10, 10], [2, 2, 4, 4], [50, 50, 1, 1]])
    gt = np.array([[0, 0, 10, 10], [5, 5, 10, 10]])
    m = loc.pairwise_overlap(det, gt, "iou")
    assert m.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert m[i, j] == pytest.approx(loc.iou(det[i], gt[j]))
    np.testing.assert_allclose(loc.iobb(det, gt[0]), [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="unknown overlap metric"):
        loc.pairwise_overlap(det, gt, "giou")
    with pytest.raises(ValueError, match=">= 0"):
        loc.iou((0, 0, -1, 1), (0, 0, 1, 1))


def test_heatmap_to_boxes_two_thresholds_and_pixel_edges():
    hm = np.zeros((8, 8))
    hm[1:3, 1:4] = 0.5  # -> 127.5 after normalisation: above 60, below 180
    hm[1, 1] = 1.0  # -> 255: the only cell above 180
    hm[5, 5] = hm[6, 6] = 0.5  # diagonal neighbours: one region with 8-connectivity
    boxes = loc.heatmap_to_boxes(hm, thresholds=(60, 180), out_size=1024)
    # one heatmap cell = 1024 / 8 = 128 px; a region over cells c0..c1 -> x = 128 c0, w = 128 (c1 - c0 + 1)
    np.testing.assert_array_equal(boxes, [[128, 128, 384, 256], [640, 640, 256, 256], [128, 128, 128, 128]])
    four = loc.heatmap_to_boxes(hm, thresholds=(60,), out_size=1024, connectivity=4)
    np.testing.assert_array_equal(four, [[128, 128, 384, 256], [640, 640, 128, 128], [768, 768, 128, 128]])


def test_heatmap_to_boxes_normalisation_rectangles_and_duplicates():
    hm = np.full((2, 4), -3.0)
    hm[1, 2] = 5.0  # min-max normalisation does not care about the range
    np.testing.assert_array_equal(loc.heatmap_to_boxes(hm, out_size=(400, 200)), [[200, 100, 100, 100]])
    # the same region at both thresholds is one box, not two (it would count as a false positive)
    assert loc.heatmap_to_boxes(hm).shape == (1, 4)
    assert loc.heatmap_to_boxes(np.ones((4, 4))).shape == (0, 4)  # constant: nothing stands out
    with pytest.raises(ValueError, match="NaN"):
        loc.heatmap_to_boxes(np.array([[0.0, np.nan]]))


def _example():
    det = [
        [(0, 0, 50, 50), (500, 500, 10, 10)],  # inside gt 1 (IoBB 1, IoU 0.25); far from everything
        [(250, 250, 100, 100)],  # overlaps gt 2 by 50 x 50: IoBB 0.25, IoU 2500 / 17500
    ]
    gt = [[(0, 0, 100, 100)], [(200, 200, 100, 100)]]
    return det, gt


def test_localization_accuracy_iobb_hand_computed():
    det, gt = _example()
    df = loc.localization_accuracy(det, gt, "iobb")
    assert df["threshold"].tolist() == [0.1, 0.25, 0.5, 0.75, 0.9]
    # gt 1 hit at every T (IoBB 1); gt 2 only at T = 0.1 (0.25 is not > 0.25)
    np.testing.assert_allclose(df["accuracy"], [1.0, 0.5, 0.5, 0.5, 0.5])
    # false positives: the far box always; the second detection once it misses (T >= 0.25); over 2 images
    np.testing.assert_allclose(df["afp"], [0.5, 1.0, 1.0, 1.0, 1.0])
    assert (df["n_gt"] == 2).all() and (df["n_images"] == 2).all()


def test_localization_accuracy_iou_hand_computed():
    det, gt = _example()
    df = loc.localization_accuracy(det, gt, "iou")
    assert df["threshold"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    np.testing.assert_allclose(df["accuracy"], [1.0, 0.5, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(df["afp"], [0.5, 1.0, 1.5, 1.5, 1.5, 1.5, 1.5])


def test_localization_empty_cases_and_table():
    df = loc.localization_accuracy([np.zeros((0, 4))], [[(0, 0, 10, 10)]], "iobb", thresholds=[0.5])
    assert df["accuracy"].tolist() == [0.0] and df["afp"].tolist() == [0.0]
    det, gt = _example()
    table = loc.localization_table({"Mass": det, "Nodule": det[:1]}, {"Mass": gt, "Nodule": gt[:1]})
    assert len(table) == 2 * (5 + 7)
    row = table[(table.label == "Nodule") & (table.metric == "iou") & (table.threshold == 0.2)]
    assert row["accuracy"].item() == 1.0 and row["afp"].item() == 1.0
    with pytest.raises(ValueError, match="Mass"):
        loc.localization_table({}, {"Mass": gt})
