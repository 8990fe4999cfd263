"""Box operations against numpy references: IoU, GIoU, anchor encoding round trips, anchor matching."""
import numpy as np
import pytest

from convforge import boxes

rng = np.random.default_rng(0)


def _random_boxes(n, min_side=0.05):
    """n valid normalized yxyx boxes."""
    y0, x0 = rng.uniform(0, 0.8, (2, n))
    h, w = rng.uniform(min_side, 0.5, (2, n))
    return np.stack([y0, x0, np.minimum(y0 + h, 1), np.minimum(x0 + w, 1)], -1).astype("float32")


def _np_iou(a, b):
    """Pairwise IoU, written out."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            inter = max(0, min(p[2], q[2]) - max(p[0], q[0])) * max(0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union
    return out


def test_iou_and_giou_match_numpy():
    a, b = _random_boxes(7), _random_boxes(5)
    reference = _np_iou(a, b)
    np.testing.assert_allclose(np.asarray(boxes.pairwise_iou(a, b)), reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(boxes.box_iou(a[:5], b)), np.diag(reference[:5]), atol=1e-5)
    same = np.asarray(boxes.generalized_iou(a, a))
    np.testing.assert_allclose(same, 1.0, atol=1e-5)
    far = np.asarray(boxes.generalized_iou(np.array([[0, 0, .1, .1]], "float32"), np.array([[.9, .9, 1, 1]], "float32")))
    assert far[0] == pytest.approx(0.02 / 1.0 - 1.0, abs=1e-5)  # IoU 0, hull 1, union 0.02


def test_encode_decode_round_trips():
    anchors, targets = _random_boxes(200), _random_boxes(200)
    deltas = np.asarray(boxes.encode(anchors, targets))
    np.testing.assert_allclose(np.asarray(boxes.decode(anchors, deltas)), targets, atol=1e-6)
    # Centre offsets are in anchor sizes over the variances: a box equal to its anchor encodes to zero.
    np.testing.assert_allclose(np.asarray(boxes.encode(anchors, anchors)), 0.0, atol=1e-6)


def _np_match(anchors, gt, valid, pos, neg):
    """The matching rule, written out with loops."""
    iou = _np_iou(anchors, gt)
    iou[:, ~valid] = -1
    index, best = iou.argmax(1), iou.max(1)
    label = np.where(best >= pos, 1, np.where(best < neg, 0, -1))
    for j in np.flatnonzero(valid)[::-1]:  # the first box wins a shared best anchor
        a = iou[:, j].argmax()
        index[a], label[a] = j, 1
    return index, label


@pytest.mark.parametrize("seed", range(4))
def test_matching_follows_the_rule(seed):
    global rng
    rng = np.random.default_rng(seed)
    anchors = _random_boxes(300)
    gt = np.concatenate([_random_boxes(4), np.zeros((3, 4), "float32")])  # padded to 7
    valid = np.array([True] * 4 + [False] * 3)
    index, label = (np.asarray(v) for v in boxes.match(anchors, gt, valid, 0.5, 0.4))
    want_index, want_label = _np_match(anchors, gt, valid, 0.5, 0.4)
    np.testing.assert_array_equal(label, want_label)
    positive = label == 1
    np.testing.assert_array_equal(index[positive], want_index[positive])
    assert set(index[positive]) == {0, 1, 2, 3}  # every object has an anchor, padding none
    assert ((label == -1) == ((_np_iou(anchors, gt[:4]).max(1) >= 0.4) & ~positive)).all()


def test_an_image_without_objects_is_all_background():
    index, label = boxes.match(_random_boxes(10), np.zeros((3, 4), "float32"), np.zeros(3, bool))
    assert (np.asarray(label) == 0).all()


def test_matching_a_batch_equals_matching_each_image():
    anchors = _random_boxes(120)
    gt = np.stack([np.concatenate([_random_boxes(k), np.zeros((5 - k, 4), "float32")]) for k in (1, 3, 0)])
    valid = np.array([[i < k for i in range(5)] for k in (1, 3, 0)])
    index, label = (np.asarray(v) for v in boxes.match(anchors, gt, valid))
    for b in range(3):
        one_index, one_label = (np.asarray(v) for v in boxes.match(anchors, gt[b], valid[b]))
        np.testing.assert_array_equal(label[b], one_label)
        np.testing.assert_array_equal(index[b][one_label == 1], one_index[one_label == 1])
