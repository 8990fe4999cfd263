"""Anchors laid out as documented, NMS equal to a numpy reference, and a graph ending in NMS exported to TFLite
and ONNX giving Keras' detections."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from convforge.layers import NonMaxSuppression, anchor_grid  # noqa: E402


def test_anchor_grid_layout():
    anchors = anchor_grid((64, 96), {"C3": 8, "C4": 16}, {"C3": 16, "C4": 32}, scales=(1.0, 2.0),
                          aspect_ratios=(0.5, 1.0, 2.0))
    assert anchors.shape == ((8 * 12 + 4 * 6) * 6, 4) and anchors.dtype == np.float32
    first = anchors[:6] * np.array([64, 96, 64, 96])
    centre = (first[:, :2] + first[:, 2:]) / 2
    np.testing.assert_allclose(centre, [[4, 4]] * 6, atol=1e-4)  # cell (0, 0) of stride 8
    h, w = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    np.testing.assert_allclose(h / w, [0.5, 1, 2, 0.5, 1, 2], rtol=1e-5)  # ratio = height / width
    np.testing.assert_allclose(h * w, [256] * 3 + [1024] * 3, rtol=1e-5)  # area = (base * scale)^2
    last = anchors[-1] * np.array([64, 96, 64, 96])
    np.testing.assert_allclose((last[:2] + last[2:]) / 2, [3.5 * 16, 5.5 * 16], atol=1e-4)


def _np_nms(boxes, scores, max_detections, iou_threshold, score_threshold):
    """Greedy per-class NMS, then the best max_detections over classes: (boxes, scores, classes)."""
    found = []
    for k in range(scores.shape[1]):
        order = [i for i in np.argsort(-scores[:, k], kind="stable") if scores[i, k] > score_threshold]
        kept = []
        for i in order:
            if all(_iou(boxes[i], boxes[j]) <= iou_threshold for j in kept):
                kept.append(i)
        found += [(scores[i, k], k, i) for i in kept[:max_detections]]
    found.sort(key=lambda t: -t[0])
    found = found[:max_detections]
    return (np.array([boxes[i] for _, _, i in found]).reshape(-1, 4), np.array([s for s, _, _ in found]),
            np.array([k for _, k, _ in found]))


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _scene(rng, batch=3, anchors=60, classes=3):
    """Clusters of overlapping boxes with random per-class scores (distinct, so the order is unambiguous)."""
    centres = rng.uniform(0.2, 0.8, (batch, 6, 2))
    jitter = rng.normal(0, 0.03, (batch, anchors, 2))
    centre = centres[:, rng.integers(0, 6, anchors)] + jitter
    half = rng.uniform(0.05, 0.15, (batch, anchors, 2))
    boxes = np.concatenate([centre - half, centre + half], -1).astype("float32")
    scores = rng.permutation(batch * anchors * classes).reshape(batch, anchors, classes) / (batch * anchors * classes)
    return boxes, scores.astype("float32")


@pytest.mark.parametrize("seed", range(3))
def test_nms_equals_numpy(seed):
    boxes, scores = _scene(np.random.default_rng(seed))
    layer = NonMaxSuppression(max_detections=10, iou_threshold=0.45, score_threshold=0.3)
    out = {k: np.asarray(v) for k, v in layer(boxes, scores).items()}
    for b in range(len(boxes)):
        want_boxes, want_scores, want_classes = _np_nms(boxes[b], scores[b], 10, 0.45, 0.3)
        n = len(want_scores)
        assert out["num_detections"][b] == n
        np.testing.assert_allclose(out["scores"][b, :n], want_scores, atol=1e-6)
        np.testing.assert_array_equal(out["classes"][b, :n], want_classes)
        np.testing.assert_allclose(out["boxes"][b, :n], want_boxes, atol=1e-6)
        assert (out["scores"][b, n:] == 0).all() and (out["boxes"][b, n:] == 0).all()


def test_a_graph_ending_in_nms_exports_and_gives_keras_detections(tmp_path):
    """Box and score heads on a conv map, NMS inside: SavedModel, TFLite and ONNX give the same detections."""
    import convforge

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(inputs)  # 8x8 cells
    centres = keras.layers.Reshape((64, 4))(keras.layers.Conv2D(4, 1, activation="sigmoid")(x))
    boxes = keras.layers.Concatenate()([keras.layers.Lambda(lambda t: t[..., :2] * 0.8, name="lo")(centres),
                                        keras.layers.Lambda(lambda t: t[..., :2] * 0.8 + 0.2, name="hi")(centres)])
    scores = keras.layers.Reshape((64, 3))(keras.layers.Conv2D(3, 1, activation="sigmoid")(x))
    model = keras.Model(inputs, NonMaxSuppression(8, 0.5, 0.2)(boxes, scores))
    result = convforge.export(model, tmp_path / "det", formats=["saved_model", "tflite", "onnx"],
                              progress=None, latency_runs=0)
    kinds = result["card"]["verification"]["output_kinds"]
    assert kinds == {"boxes": "values", "scores": "values", "classes": "integer", "num_detections": "integer"}
    for entry in result["card"]["artifacts"]:
        check = entry["check"]
        assert check["status"] == "passed", entry
        assert check["per_output"]["num_detections"]["agreement"] == 1.0, entry["format"]
        assert check["per_output"]["classes"]["agreement"] == 1.0, entry["format"]
