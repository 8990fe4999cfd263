"""Blocks: ceil-mode pooling equals PyTorch's, LRN equals its formula, fixed filters do what they say."""
import numpy as np
import keras
import pytest

from convforge.errors import ModelError
from convforge.layers import KERNELS, ImageFilter, LocalResponseNormalization, max_pool


def _torch_like_max_pool(x, k, s, pad, ceil):
    """Reference max-pool with PyTorch's output-size rule (padding ignored by the max)."""
    h = x.shape[0]
    n = (h + 2 * pad - k + (s - 1 if ceil else 0)) // s + 1
    if ceil and (n - 1) * s >= h + pad:
        n -= 1
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            r0, c0 = i * s - pad, j * s - pad
            win = x[max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, h)]
            out[i, j] = win.max()
    return out


@pytest.mark.parametrize("size,k,s,pad,ceil", [(7, 3, 2, 0, True), (8, 3, 2, 0, True), (13, 3, 2, 0, True),
                                               (112, 3, 2, 0, True), (9, 3, 2, 1, False), (14, 2, 2, 0, True),
                                               (10, 3, 2, 1, True)])
def test_max_pool_matches_pytorch_rule(size, k, s, pad, ceil):
    x = np.random.default_rng(size).random((size, size)).astype("float32")  # non-negative, as after ReLU
    inp = keras.Input((size, size, 1))
    model = keras.Model(inp, max_pool(inp, k, s, padding=pad, ceil_mode=ceil, name="p"))
    got = np.asarray(model(x[None, :, :, None]))[0, :, :, 0]
    np.testing.assert_allclose(got, _torch_like_max_pool(x, k, s, pad, ceil))


def test_local_response_normalization_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 3, 8)).astype("float32")
    layer = LocalResponseNormalization(depth=5, bias=2.0, alpha=1e-1, beta=0.75)
    got = np.asarray(layer(x))
    expected = np.empty_like(x)
    for c in range(8):
        lo, hi = max(0, c - 2), min(8, c + 3)
        expected[..., c] = x[..., c] / (2.0 + 1e-1 * np.sum(x[..., lo:hi] ** 2, axis=-1)) ** 0.75
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_image_filter_sobel_finds_a_vertical_edge():
    img = np.zeros((1, 8, 8, 1), "float32")
    img[..., 4:, :] = 1.0
    out = np.asarray(ImageFilter(["sobel_x", "sobel_y", "box_blur"])(img))
    assert out.shape == (1, 8, 8, 3)
    assert np.abs(out[0, 2:6, 3:5, 0]).min() == 4.0  # strong response across the edge
    assert np.abs(out[0, 2:6, 1:3, 0]).max() == 0.0  # none in flat areas
    assert np.abs(out[0, 2:6, 2:6, 1]).max() == 0.0  # sobel_y is blind to vertical edges
    layer = ImageFilter("sharpen")
    layer.build((None, 8, 8, 1))
    assert layer.trainable_weights == []  # hand-made filters stay fixed while the rest of a model trains


def test_image_filter_rejects_unknown_kernel():
    with pytest.raises(ModelError, match="'sobel' is unknown.*sobel_x"):
        ImageFilter(["sobel"])
    assert "gaussian_blur" in KERNELS


def test_custom_layers_round_trip(tmp_path):
    inp = keras.Input((16, 16, 3))
    x = ImageFilter(["sobel_x", "laplacian"])(inp)
    x = keras.layers.Conv2D(4, 3)(x)
    x = LocalResponseNormalization()(x)
    model = keras.Model(inp, x)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    data = np.random.rand(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(data)), np.asarray(model(data)), atol=1e-6)
