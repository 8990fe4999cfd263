"""Max-pooling with argmax and max-unpooling (SegNet's decoder): the pooled values are MaxPooling2D's, the indices
TensorFlow's own argmax positions, unpooling puts each maximum back where it was with zeros elsewhere (any size,
odd ones included), gradients reach the maxima, and a model using both exports to TFLite builtins and ONNX."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import convforge  # noqa: E402
from convforge.errors import ModelError  # noqa: E402
from convforge.layers import MaxPoolWithArgmax, MaxUnpool  # noqa: E402


@pytest.mark.parametrize("size,k", [((8, 8), 2), ((7, 9), 2), ((9, 12), 3)])
def test_pool_matches_keras_and_tensorflow_and_unpool_restores_the_maxima(size, k):
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype("float32")
    values, index = (np.asarray(t) for t in MaxPoolWithArgmax(k)(x))
    np.testing.assert_array_equal(values, keras.layers.MaxPooling2D(k)(x))
    # TensorFlow's flat index without the batch is (y * W + x) * C + c.
    _, tf_index = tf.nn.max_pool_with_argmax(x, k, k, "VALID", include_batch_in_index=False)
    np.testing.assert_array_equal(index, tf_index.numpy() // 3)
    assert index.dtype == "int32"

    restored = np.asarray(MaxUnpool(k, output_size=size)([values, index]))
    assert restored.shape == x.shape
    want = np.zeros_like(x)
    for b in range(2):
        for c in range(3):
            flat = want[b, :, :, c].reshape(-1)
            flat[np.asarray(index[b, :, :, c]).reshape(-1)] = np.asarray(values[b, :, :, c]).reshape(-1)
            want[b, :, :, c] = flat.reshape(size)
    np.testing.assert_array_equal(restored, want)
    assert np.count_nonzero(restored) == values.size  # one value per window, zeros elsewhere


def test_unpool_leaves_a_window_empty_for_an_index_outside_it_and_checks_its_size():
    values = np.ones((1, 2, 2, 1), "float32")
    # W = 4: 0 and 3 lie in their windows (0, 0) and (0, 1); 11 (y 2, x 3) is not in window (1, 0), 100 nowhere.
    index = np.array([[0, 3], [11, 100]], "int32").reshape(1, 2, 2, 1)
    out = np.asarray(MaxUnpool(2)([values, index]))[0, :, :, 0]
    assert out.sum() == 2 and out[0, 0] == 1 and out[0, 3] == 1
    with pytest.raises(ModelError, match="output_size .* does not pool"):
        MaxUnpool(2, output_size=(9, 4))([values, index])
    with pytest.raises(ModelError, match="pool_size"):
        MaxPoolWithArgmax((2, 3))


def test_gradients_reach_only_the_maxima():
    x = tf.constant(np.random.default_rng(1).normal(size=(1, 4, 4, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        values, index = MaxPoolWithArgmax(2)(x)
        y = MaxUnpool(2)([values * 2.0, index])
        loss = tf.reduce_sum(y)
    grad = tape.gradient(loss, x).numpy()
    assert np.count_nonzero(grad) == values.shape[1] * values.shape[2] * 2 and np.all(grad[grad != 0] == 2.0)


def test_a_segnet_style_model_trains_saves_and_exports(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    pooled, index = MaxPoolWithArgmax(2, name="pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(pooled)
    x = MaxUnpool(2, output_size=(16, 16), name="unpool")([x, index])
    outputs = keras.layers.Conv2D(2, 1, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(2)
    images = rng.normal(size=(16, 16, 16, 3)).astype("float32")
    masks = (images[..., 0] > 0).astype("int32")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    losses = model.fit(images, masks, epochs=8, batch_size=8, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded(images[:2]), model(images[:2]), atol=1e-6)
    result = convforge.export(model, tmp_path / "export", formats=["tflite", "onnx", "tflite_int8", "tflite_fp16"],
                              inputs_for_check=images[:4], representative=images, progress=None, latency_runs=0)
    checks = {a["format"]: a["check"] for a in result["card"]["artifacts"]}
    assert checks["tflite"]["status"] == checks["onnx"]["status"] == "passed", checks
    # The recorded positions survive quantization (they are int32, never a quantized float): full int8 puts the
    # values where Keras does, so the classes of nearly every pixel agree.
    assert checks["tflite_int8"]["top1_agreement"] >= 0.95 and checks["tflite_fp16"]["top1_agreement"] >= 0.99
    from convforge.export.tflite import custom_op_names

    assert custom_op_names((tmp_path / "export" / "model.tflite").read_bytes()) == []
