"""Faster R-CNN end to end on a tiny instance: RoIAlign equals crop_and_resize plus average pooling and converts to
TFLite builtins; the detector trains with both stages' losses logged, its inference model ends in the four
detection outputs, survives saving, and exports to SavedModel, TFLite and ONNX with Keras' detections."""
import numpy as np
import pytest
import tensorflow as tf

import convforge
from convforge.errors import RecipeError
from convforge.layers.roi_align import RoIAlign
from convforge.tasks import get_task

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
HEAD = {"name": "faster_rcnn", "channels": 8, "fc_units": 16, "train_proposals": 16, "proposals": 12,
        "pre_nms_proposals": 64, "rpn_samples": 64, "roi_samples": 16, "max_detections": 10}
SMALL = {"depths": [1, 1, 1, 1], "widths": [8, 8, 8, 8]}


def _boxes(rng, batch, count, low=0.0, high=1.0):
    """Random normalized yxyx boxes inside [low, high]."""
    corners = rng.uniform(low, high, (batch, count, 2, 2))
    return np.concatenate([corners.min(2), corners.max(2)], -1).astype("float32")


def _reference(features, boxes, pool_size, sampling_ratio):
    """RoIAlign by tf.image.crop_and_resize at the sample points, then the mean of each bin's samples."""
    batch, height, width, channels = features.shape
    n = pool_size * sampling_ratio

    def through(low, high, size):
        # crop_and_resize samples low * (size - 1) + i (high - low) (size - 1) / (n - 1); RoIAlign's first and
        # last samples sit at low * size - 0.5 + (0.5 or n - 0.5) (high - low) size / n.
        first = low * size - 0.5 + 0.5 * (high - low) * size / n
        last = low * size - 0.5 + (n - 0.5) * (high - low) * size / n
        return np.clip(first, 0, size - 1) / (size - 1), np.clip(last, 0, size - 1) / (size - 1)

    y0, y1 = through(boxes[..., 0], boxes[..., 2], height)
    x0, x1 = through(boxes[..., 1], boxes[..., 3], width)
    crops = tf.image.crop_and_resize(features, np.stack([y0, x0, y1, x1], -1).reshape(-1, 4),
                                     np.repeat(np.arange(batch), boxes.shape[1]), (n, n)).numpy()
    return crops.reshape(batch, -1, pool_size, sampling_ratio, pool_size, sampling_ratio, channels).mean((3, 5))


@pytest.mark.parametrize("method", ["gather", "matmul"])
def test_roi_align_equals_crop_and_resize_then_average_pooling(method):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 7, 5)).astype("float32")
    # Boxes whose samples stay between the outer cell centres (where the reference does not extrapolate).
    boxes = _boxes(rng, 2, 6, 0.08, 0.92)
    out = np.asarray(RoIAlign(7, 2, method=method)([features], boxes))
    assert out.shape == (2, 6, 7, 7, 5)
    np.testing.assert_allclose(out, _reference(features, boxes, 7, 2), atol=1e-5)
    # Two levels: each box is read from the level whose size fits it, as that level alone would read it.
    coarse = rng.normal(size=(2, 4, 3, 5)).astype("float32")
    two = np.asarray(RoIAlign(3, 2, level_sizes=[0.2, 0.4], method=method)([features, coarse], boxes))
    side = np.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
    expected = np.where((side > np.sqrt(0.2 * 0.4))[..., None, None, None], _reference(coarse, boxes, 3, 2),
                        _reference(features, boxes, 3, 2))
    np.testing.assert_allclose(two, expected, atol=1e-5)


def test_roi_align_converts_to_tflite_builtins():
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(1)
    features = rng.normal(size=(1, 6, 6, 4)).astype("float32")
    boxes = _boxes(rng, 1, 5)
    for method in ("gather", "matmul"):
        layer = RoIAlign(7, 2, method=method)
        fn = tf.function(lambda f, b: layer([f], b), input_signature=[tf.TensorSpec(features.shape),
                                                                       tf.TensorSpec(boxes.shape)])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: fails if one is needed
        interpreter = Interpreter(model_content=converter.convert())
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], features if len(detail["shape"]) == 4 else boxes)
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(out, np.asarray(layer([features], boxes)), atol=1e-5)


def _data(count=8, size=64):
    """Images with two bright squares and their padded ground truth (B, 4, 6)."""
    x = np.random.default_rng(0).uniform(0, 0.2, (count, size, size, 3)).astype("float32")
    y = np.zeros((count, 4, 6), "float32")
    for i in range(count):
        a, b = 0.1 + 0.05 * (i % 3), 0.5 - 0.04 * (i % 4)
        y[i, 0] = [a, a, a + 0.35, a + 0.35, 0, 1]
        y[i, 1] = [b, 0.55, b + 0.3, 0.9, 1, 1]
        for box, channel in ((y[i, 0], 0), (y[i, 1], 1)):
            t, l, btm, r = (np.asarray(box[:4]) * size).astype(int)
            x[i, t:btm, l:r, channel] = 1.0
    return x, y


def test_faster_rcnn_trains_with_both_stages_logged_and_exports(tmp_path):
    import keras

    task = get_task("detection", HEAD)
    model = convforge.build_model("resnet18", task="detection", head="faster_rcnn", num_classes=2,
                                  input_shape=(64, 64, 3), **SMALL,
                                  **{k: v for k, v in HEAD.items() if k != "name"})
    spec = task.spec_of(model)
    assert spec["anchors"] == 4 * 4 * 9 and spec["proposals"] == 16 and spec["num_classes"] == 2
    model.compile(optimizer=keras.optimizers.Adam(3e-3), **task.compile_args(model))
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=4, verbose=0).history
    assert {"loss", "rpn_loss", "roi_loss", "proposal_recall"} <= set(history)
    assert history["loss"][-1] < history["loss"][0]
    assert history["rpn_loss"][-1] < history["rpn_loss"][0]
    np.testing.assert_allclose(np.add(history["rpn_loss"], history["roi_loss"]), history["loss"], rtol=1e-4)

    inference = task.inference_model(model)
    assert get_task("detection").recognizes(inference)
    out = inference(x[:2])
    assert out["boxes"].shape == (2, 10, 4) and out["scores"].shape == (2, 10)
    assert out["classes"].dtype == "int32" and out["num_detections"].dtype == "int32"

    # The training model reloads and still knows its way to the same detections.
    model.save(tmp_path / "train.keras")
    reloaded = keras.models.load_model(tmp_path / "train.keras", compile=False)
    again = task.inference_model(reloaded)(x[:2])
    np.testing.assert_allclose(np.asarray(again["scores"]), np.asarray(out["scores"]), atol=1e-5)

    exported = convforge.export(inference, tmp_path / "export", formats=["saved_model", "tflite", "onnx"],
                                inputs_for_check=x[:4], progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        check = entry["check"]
        assert check["status"] == "passed", entry["format"]
        assert check["per_output"]["num_detections"]["agreement"] == 1.0, entry["format"]


def test_feature_pyramid_variant_gives_detections():
    task = get_task("detection", {**HEAD, "levels": ["C3", "C4", "C5"], "fpn": True, "anchor_size": 4,
                                  "anchor_scales": [1.0]})
    model = task.build_model("resnet18", (64, 64, 3), 2, SMALL)
    assert task.spec_of(model)["anchors"] == (64 + 16 + 4) * 3
    assert model.get_layer("roi_align").level_sizes == pytest.approx([32 / 64, 64 / 64, 128 / 64])
    out = task.inference_model(model)(_data(2)[0])
    assert int(np.asarray(out["num_detections"]).max()) <= 10


def test_faster_rcnn_options_are_checked():
    from convforge.recipes import load_recipe

    recipe = load_recipe(convforge.__path__[0] + "/../../recipes/detection/faster_rcnn_resnet18_shapes.yaml")
    assert recipe.head["name"] == "faster_rcnn"
    with pytest.raises(RecipeError, match="faster_rcnn reads one level without a feature pyramid"):
        load_recipe(convforge.__path__[0] + "/../../recipes/detection/faster_rcnn_resnet18_shapes.yaml",
                    overrides=["head.levels=[C3,C4]", "head.fpn=false"])
