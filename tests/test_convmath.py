"""Checks of convforge.convmath against Keras' real shapes, measured gradients and published counts."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from convforge import convmath as cm
from convforge.errors import ConvforgeError

SRC = Path(__file__).resolve().parents[1] / "src"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def _run(layer, h, w, c=1):
    """Return the real (H, W) of layer's output on an h x w image, or None if Keras refuses it."""
    try:
        y = layer(np.zeros((1, h, w, c), dtype="float32"))
    except Exception:  # Keras/TF raise ValueError or InvalidArgumentError for impossible sizes.
        return None
    hw = tuple(int(d) for d in y.shape[1:3])
    # TF pooling returns an empty tensor where convolution raises; both mean "does not fit".
    return hw if min(hw) >= 1 else None


def _formula(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ConvforgeError:
        return None


def _positive_weights(model, value=0.1):
    # Positive kernels, zero biases and a positive input make every path's product
    # positive, so the gradient is non-zero exactly on the pixels a unit can see.
    for layer in model.layers:
        for w in layer.weights:
            fill = 0.0 if "bias" in w.path else value
            w.assign(np.full(w.shape, fill, dtype="float32"))


def _gradient_boxes(model):
    """Return {(i, j): box of input pixels with non-zero d output(i, j) / d input} for every unit."""
    _, h, w, c = model.input.shape
    x = tf.ones((1, h, w, c))
    with tf.GradientTape() as tape:
        tape.watch(x)
        units = tf.reduce_sum(model(x)[0], axis=-1)
    jac = tape.jacobian(units, x).numpy()  # (oh, ow, 1, h, w, c)
    seen = np.abs(jac).sum(axis=(2, 5)) > 0
    boxes = {}
    for i in range(seen.shape[0]):
        for j in range(seen.shape[1]):
            rows, cols = np.nonzero(seen[i, j])
            boxes[(i, j)] = (int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max()))
    return boxes


def _assert_field_matches_gradient(model, layer_name=None):
    """Check every output unit's clipped computed field against the measured gradient support."""
    layer_name = layer_name or model.layers[-1].name
    rf = cm.receptive_fields(model, strict=True)[layer_name]
    _, h, w, _ = model.input.shape
    boxes = _gradient_boxes(model)
    for (i, j), measured in boxes.items():
        computed = rf.clipped_box(i, j, h, w)
        assert measured == computed, f"unit {(i, j)}: gradient box {measured} != computed {computed} ({rf})"
    return rf


# --------------------------------------------------------------------------------------
# output sizes
# --------------------------------------------------------------------------------------

def test_same_padding_matches_tensorflow_rule():
    # TF: out = ceil(n/s), total = max((out-1)*s + k_eff - n, 0), before = total // 2.
    assert cm.same_padding(224, 7, 2) == (2, 3)
    assert cm.same_padding(225, 7, 2) == (3, 3)
    assert cm.same_padding(10, 3, 1, dilation=2) == (2, 2)
    assert cm.same_padding(8, 1, 2) == (0, 0)
    assert cm.same_padding(5, 4) == (1, 2)


def test_conv_output_size_matches_keras_conv2d():
    checked = 0
    for size in (1, 2, 7, 8, 13):
        for kernel in (1, 2, 3, 5):
            for stride in (1, 2, 3):
                for dilation in (1, 2):
                    if stride > 1 and dilation > 1:
                        continue  # Keras refuses strides and dilation together.
                    for padding in ("same", "valid", 1, 2):
                        keras_pad = "valid" if isinstance(padding, int) else padding
                        conv = keras.layers.Conv2D(1, kernel, strides=stride, padding=keras_pad,
                                                   dilation_rate=dilation)
                        padded = size + 2 * padding if isinstance(padding, int) else size
                        real = _run(conv, padded, padded + 1)
                        expect_h = _formula(cm.conv_output_size, size, kernel, stride, padding, dilation)
                        expect_w = _formula(cm.conv_output_size, size + 1, kernel, stride, padding, dilation)
                        assert (None if real is None else real) == (
                            None if expect_h is None or expect_w is None else (expect_h, expect_w)
                        ), (size, kernel, stride, padding, dilation)
                        if real is not None and isinstance(padding, int):
                            # Also the symbolic shape, which is what receptive_fields reads.
                            x = keras.KerasTensor((None, size, size + 1, 1))
                            y = conv(keras.layers.ZeroPadding2D(padding)(x))
                            assert tuple(y.shape[1:3]) == real
                        checked += 1
    assert checked > 250


def test_conv_output_size_tuple_padding_and_errors():
    assert cm.conv_output_size(224, 7, 2, (2, 3)) == 112
    assert cm.conv_output_size(224, 7, 2, 3) == 112
    assert cm.conv_output_size(7, 3, 1, "valid", dilation=3) == 1
    with pytest.raises(ConvforgeError, match=r"kernel 5.*size 3"):
        cm.conv_output_size(3, 5)
    with pytest.raises(ConvforgeError, match="stride"):
        cm.conv_output_size(10, 3, stride=0)
    with pytest.raises(ConvforgeError, match="padding"):
        cm.conv_output_size(10, 3, padding="full")


def test_pool_output_size_matches_keras_pooling():
    checked = 0
    for cls in (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D):
        for size in (1, 2, 5, 8, 13):
            for pool in (1, 2, 3):
                for stride in (None, 1, 2, 3):
                    for padding in ("same", "valid"):
                        real = _run(cls(pool, strides=stride, padding=padding), size, size + 2)
                        expect_h = _formula(cm.pool_output_size, size, pool, stride, padding)
                        expect_w = _formula(cm.pool_output_size, size + 2, pool, stride, padding)
                        expected = None if expect_h is None or expect_w is None else (expect_h, expect_w)
                        assert real == expected, (cls.__name__, size, pool, stride, padding)
                        checked += 1
    assert checked == 240


def test_pool_output_size_ceil_mode_matches_pytorch():
    # PyTorch: out = ceil((n + 2p - k) / s) + 1, minus 1 if that last window starts at or
    # after n + p (i.e. inside the right padding).
    # GoogLeNet's MaxPool2d(3, 2, ceil_mode=True): (112-3)/2 = 54.5 -> 55 + 1 = 56.
    assert cm.pool_output_size(112, 3, 2, ceil_mode=True) == 56
    assert cm.pool_output_size(112, 3, 2) == 55
    # (56-3)/2 = 26.5 -> 27 + 1 = 28; GoogLeNet's MaxPool2d(2, 2, ceil_mode=True) on 14 -> 7.
    assert cm.pool_output_size(56, 3, 2, ceil_mode=True) == 28
    assert cm.pool_output_size(14, 2, 2, ceil_mode=True) == 7
    # (7-2)/2 = 2.5 -> 3 + 1 = 4; floor mode gives 3.
    assert cm.pool_output_size(7, 2, ceil_mode=True) == 4
    assert cm.pool_output_size(7, 2) == 3
    # k3 s2 on 7: (7-3)/2 = 2 exactly, so ceil changes nothing: 3.
    assert cm.pool_output_size(7, 3, 2, ceil_mode=True) == 3
    # SqueezeNet 1.0: 224 -conv7s2-> 109 -> (109-3)/2=53 -> 54; (54-3)/2=25.5 -> 27; 27 -> 13.
    assert cm.pool_output_size(109, 3, 2, ceil_mode=True) == 54
    assert cm.pool_output_size(54, 3, 2, ceil_mode=True) == 27
    assert cm.pool_output_size(27, 3, 2, ceil_mode=True) == 13
    # (13-2)/2 = 5.5 -> 6 + 1 = 7 with k2 s2.
    assert cm.pool_output_size(13, 2, ceil_mode=True) == 7
    # n=5, k2 s2 p1: (5+2-2)/2 = 2.5 -> 3 + 1 = 4, but window 4 starts at 3*2 = 6 >= 5+1: dropped -> 3.
    assert cm.pool_output_size(5, 2, 2, padding=1, ceil_mode=True) == 3
    # n=4, k3 s2 p1: (4+2-3)/2 = 1.5 -> 2 + 1 = 3; window 3 starts at 4 < 4+1: kept.
    assert cm.pool_output_size(4, 3, 2, padding=1, ceil_mode=True) == 3
    assert cm.pool_output_size(4, 3, 2, padding=1) == 2
    with pytest.raises(ConvforgeError):
        cm.pool_output_size(2, 3)
    with pytest.raises(ConvforgeError, match="ceil_mode"):
        cm.pool_output_size(8, 2, padding="same", ceil_mode=True)


def test_conv_transpose_output_size_matches_keras():
    checked = 0
    for size in (1, 3, 4, 7):
        for kernel in (1, 2, 3, 4, 5):
            for stride in (1, 2, 3):
                for padding in ("same", "valid"):
                    for output_padding in [None] + list(range(stride)):
                        layer = keras.layers.Conv2DTranspose(1, kernel, strides=stride, padding=padding,
                                                             output_padding=output_padding)
                        real = _run(layer, size, size + 1)
                        expected = (
                            _formula(cm.conv_transpose_output_size, size, kernel, stride, padding, output_padding),
                            _formula(cm.conv_transpose_output_size, size + 1, kernel, stride, padding, output_padding),
                        )
                        expected = None if None in expected else expected
                        assert real == expected, (size, kernel, stride, padding, output_padding)
                        checked += 1
    # TF's CPU kernel cannot run dilated transposed convolutions: compare Keras' declared shape.
    for dilation in (2, 3):
        for kernel in (2, 3):
            for padding in ("same", "valid"):
                layer = keras.layers.Conv2DTranspose(1, kernel, padding=padding, dilation_rate=dilation)
                declared = tuple(layer(keras.KerasTensor((None, 5, 6, 1))).shape[1:3])
                assert declared == (cm.conv_transpose_output_size(5, kernel, 1, padding, dilation=dilation),
                                    cm.conv_transpose_output_size(6, kernel, 1, padding, dilation=dilation))
    assert checked > 200
    # PyTorch formula: (n-1)*s - 2p + d(k-1) + output_padding + 1.
    assert cm.conv_transpose_output_size(7, 4, 2, 1) == 14
    assert cm.conv_transpose_output_size(7, 3, 2, 1, output_padding=1) == 14
    with pytest.raises(ConvforgeError, match="output_padding"):
        cm.conv_transpose_output_size(7, 3, 2, 1, output_padding=2)


# --------------------------------------------------------------------------------------
# receptive fields
# --------------------------------------------------------------------------------------

def test_vgg16_receptive_fields():
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    rfs = cm.receptive_fields(model, strict=True)
    assert list(rfs) == [layer.name for layer in model.layers]
    assert rfs["block1_conv1"].size == (3, 3)
    assert rfs["block5_conv3"].size == (196, 196) and rfs["block5_conv3"].jump == (16, 16)
    assert rfs["block5_pool"].size == (212, 212) and rfs["block5_pool"].jump == (32, 32)
    # 'same' 3x3 convs keep unit 0 on pixel 0; each 2x2 pool moves it by half its jump.
    assert rfs["block5_pool"].start == (15.5, 15.5)
    assert rfs["block5_pool"].box(0, 0) == (-90, -90, 121, 121)


def test_gradient_matches_chain_with_strides_dilation_padding():
    x = inp = keras.Input((45, 38, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="c1")(x)
    x = keras.layers.Conv2D(3, 5, strides=2, padding="same", name="c2")(x)
    x = keras.layers.ZeroPadding2D(((1, 2), (2, 1)), name="pad")(x)
    x = keras.layers.Conv2D(3, 3, dilation_rate=2, padding="valid", name="dil")(x)
    x = keras.layers.AveragePooling2D(3, strides=2, padding="same", name="avg")(x)
    x = keras.layers.Conv2D(3, 3, strides=2, padding="valid", name="c3")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(2, 1, name="c4")(x)
    model = keras.Model(inp, x)
    _positive_weights(model)
    rf = _assert_field_matches_gradient(model)
    # 1 +2 (c1) +4 (c2 at j1) +8 (dil, k_eff 5 at j2) +4 (avg at j2) +8 (c3 at j4) = 27; jump 8.
    assert rf.size == (27, 27) and rf.jump == (8, 8)
    # Intermediate layers against their own gradients too.
    for name in ("c2", "dil", "avg"):
        sub = keras.Model(inp, model.get_layer(name).output)
        _assert_field_matches_gradient(sub, name)


def test_gradient_matches_fully_inside_field_exactly():
    inp = keras.Input((64, 56, 1))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(inp)
    x = keras.layers.Conv2D(2, 5, dilation_rate=2, padding="same")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Conv2D(2, 3, padding="valid")(x)
    model = keras.Model(inp, x)
    _positive_weights(model)
    rf = cm.receptive_fields(model)[model.layers[-1].name]
    _, oh, ow, _ = model.output.shape
    i, j = oh // 2, ow // 2
    top, left, bottom, right = rf.box(i, j)
    assert top >= 0 and left >= 0 and bottom < 64 and right < 56, "field should fit inside the image"
    measured = _gradient_boxes(model)[(i, j)]
    assert measured == (top, left, bottom, right)
    # 1 +2 (3x3 at j1) +16 (k_eff 9 at j2) +2 (pool 2 at j2) +8 (3x3 at j4) = 29.
    assert (measured[2] - measured[0] + 1, measured[3] - measured[1] + 1) == rf.size == (29, 29)


def test_gradient_matches_add_and_concatenate_branches():
    inp = keras.Input((33, 35, 2))
    a = keras.layers.Conv2D(2, 3, padding="same")(inp)
    a = keras.layers.Conv2D(2, 3, strides=2, padding="same")(a)
    b = keras.layers.Conv2D(2, 7, strides=2, padding="same")(inp)
    added = keras.layers.Add(name="add")([a, b])
    added_model = keras.Model(inp, keras.layers.Conv2D(2, 3, name="after_add")(added))
    _positive_weights(added_model)
    rf = _assert_field_matches_gradient(added_model)
    assert rf.size == (7 + 2 * 2, 7 + 2 * 2)

    # Branches whose fields have different centres, so the union is not symmetric: 'same'
    # puts TF's odd padding pixel after the image, explicit padding puts it before.
    c = keras.layers.Conv2D(2, 3, strides=2, padding="same")(inp)
    left = keras.layers.ZeroPadding2D(((3, 0), (3, 0)))(inp)
    left = keras.layers.Conv2D(2, 4, strides=2, padding="valid")(left)
    right = keras.layers.Conv2D(2, 4, strides=2, padding="same")(inp)
    e = keras.layers.AveragePooling2D(2, padding="same")(inp)
    cat = keras.layers.Concatenate(name="cat")([c, left, right, e])
    cat_model = keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same", name="after_cat")(cat))
    _positive_weights(cat_model)
    rf = _assert_field_matches_gradient(keras.Model(inp, cat), "cat")
    # Unit 0 sees [-3, 0] through `left` and [-1, 2] through `right`: 6 pixels centred on -0.5.
    assert rf.size == (6, 6) and rf.start == (-0.5, -0.5)
    _assert_field_matches_gradient(cat_model, "after_cat")


def test_gradient_matches_asymmetric_kernels():
    inp = keras.Input((40, 44, 1))
    x = keras.layers.Conv2D(2, (1, 7), padding="same")(inp)
    x = keras.layers.Conv2D(2, (7, 1), padding="same")(x)
    x = keras.layers.Conv2D(2, 3, strides=2, padding="valid")(x)
    x = keras.layers.Conv2D(2, (1, 7), padding="valid")(x)
    x = keras.layers.Conv2D(2, (5, 1), strides=(2, 1), padding="same")(x)
    model = keras.Model(inp, x)
    _positive_weights(model)
    rf = _assert_field_matches_gradient(model)
    # rows: 1 + 6 + 2 + 8 (5x1 at jump 2) = 17; cols: 1 + 6 + 2 + 12 (1x7 at jump 2) = 21.
    assert rf.size == (17, 21) and rf.jump == (4, 2)


def test_global_layers_and_squeeze_excitation_context():
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    gate = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    gate = keras.layers.Dense(4, activation="sigmoid", name="fc")(gate)
    gate = keras.layers.Reshape((1, 1, 4), name="gate")(gate)
    x = keras.layers.Multiply(name="scale")([x, gate])
    x = keras.layers.Conv2D(4, 3, padding="same", name="after")(x)
    y = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(y))
    rfs = cm.receptive_fields(model, strict=True)
    assert rfs["gap"].is_global and rfs["gap"].size == (16, 16) and rfs["gap"].jump is None
    assert rfs["gate"].is_global
    assert rfs["scale"].size == (3, 3) and rfs["scale"].global_context and not rfs["scale"].is_global
    assert rfs["after"].size == (5, 5) and rfs["after"].global_context
    assert rfs["flat"].is_global and rfs["head"].is_global
    assert rfs["conv"].box(0, 0) == (-1, -1, 1, 1)
    assert rfs["head"].box(0, 0) == (0, 0, 15, 15)


def test_nested_model_recursion_and_upsampling():
    inner_in = keras.Input((32, 32, 3))
    y = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="down")(inner_in)
    y = keras.layers.Conv2D(4, 3, padding="same", name="mix")(y)
    inner = keras.Model(inner_in, y, name="stem")
    inp = keras.Input((32, 32, 3))
    z = inner(inp)
    z = keras.layers.MaxPooling2D(2, name="pool")(z)
    z = keras.layers.UpSampling2D(2, name="up")(z)
    z = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same", name="deconv")(z)
    model = keras.Model(inp, z)
    rfs = cm.receptive_fields(model, strict=True)
    assert "stem/down" in rfs and "stem/mix" in rfs
    names = list(rfs)
    assert names.index("stem") < names.index("stem/down") < names.index("pool")
    assert rfs["stem/mix"] == rfs["stem"]
    assert rfs["stem/mix"].size == (7, 7) and rfs["stem/mix"].jump == (2, 2)
    assert rfs["pool"].size == (9, 9) and rfs["pool"].jump == (4, 4)
    # Nearest upsampling by 2 widens the field by half an input jump (4 px) to cover every unit.
    assert rfs["up"].jump == (2, 2) and rfs["up"].size == (11, 11)
    assert rfs["deconv"].jump == (1, 1)
    assert cm.count_macs(model) == cm.count_macs(inner) + cm.layer_macs(model.get_layer("deconv"))


@pytest.mark.parametrize("kind", ["nearest", "bilinear", "tconv3_same", "tconv4_valid"])
def test_upsampling_fields_contain_the_measured_field(kind):
    inp = keras.Input((24, 24, 1))
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same")(inp)
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same")(x)  # jump 4 from here
    if kind in ("nearest", "bilinear"):
        x = keras.layers.UpSampling2D(2, interpolation=kind)(x)
    elif kind == "tconv3_same":
        x = keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same")(x)
    else:
        x = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="valid")(x)
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", name="out")(x))
    _positive_weights(model)
    rf = cm.receptive_fields(model, strict=True)["out"]
    assert rf.jump == (2, 2)
    for (i, j), (top, left, bottom, right) in _gradient_boxes(model).items():
        c_top, c_left, c_bottom, c_right = rf.clipped_box(i, j, 24, 24)
        # Not affine, so only a superset is possible: never too small, at most half an input jump wider.
        assert c_top <= top and c_left <= left and c_bottom >= bottom and c_right >= right, (i, j)
        assert max(top - c_top, left - c_left, c_bottom - bottom, c_right - right) <= 2, (i, j)


def test_sequential_channels_first_and_unknown_sizes():
    seq = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, strides=2, padding="same"),
                            keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(3)])
    rfs = cm.receptive_fields(seq, strict=True)
    assert list(rfs)[1:] == [layer.name for layer in seq.layers]
    assert rfs[seq.layers[1].name].size == (5, 5) and rfs[seq.layers[1].name].jump == (4, 4)
    assert cm.count_macs(seq) == 16 * 16 * 4 * 27 + 256 * 3

    inp = keras.Input((3, 32, 30))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", data_format="channels_first", name="c")(inp)
    first = keras.Model(inp, keras.layers.AveragePooling2D(2, data_format="channels_first", name="p")(x))
    assert cm.receptive_fields(first, strict=True)["p"].size == (5, 5)
    assert cm.count_macs(first) == 16 * 15 * 4 * 27

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="a")(inp)
    x = keras.layers.Conv2D(4, 3, strides=2, name="b")(x)
    free = keras.Model(inp, keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c")(x))
    rfs = cm.receptive_fields(free)
    assert rfs["b"].size == (5, 5) and rfs["c"] is None  # TF's 'same' offset depends on the size
    with pytest.raises(ConvforgeError, match="'c'.*known input size"):
        cm.receptive_fields(free, strict=True)
    with pytest.raises(ConvforgeError, match="fixed input size"):
        cm.count_macs(free)


def test_strict_mode_names_unknown_layers():
    class Mystery(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    class Scale(keras.layers.Layer):
        receptive_field_passthrough = True

        def call(self, x):
            return x * 3.0

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="first")(inp)
    x = Scale(name="scale")(x)
    x = keras.layers.Lambda(lambda t: t[:, ::2, ::2, :], name="subsample")(x)
    x = keras.layers.Conv2D(4, 3, name="later")(x)
    model = keras.Model(inp, x)
    with pytest.raises(ConvforgeError, match=r"'subsample'.*Lambda.*Supported layer types:.*Conv2D"):
        cm.receptive_fields(model, strict=True)
    rfs = cm.receptive_fields(model)
    assert rfs["first"].size == (3, 3) and rfs["scale"].size == (3, 3)
    assert rfs["subsample"] is None and rfs["later"] is None

    custom = keras.Model(inp, Mystery(name="odd")(inp))
    with pytest.raises(ConvforgeError, match=r"'odd'.*Mystery"):
        cm.receptive_fields(custom, strict=True)
    assert cm.receptive_fields(custom)["odd"] is None


# --------------------------------------------------------------------------------------
# MACs and parameters
# --------------------------------------------------------------------------------------

def _layer_on(layer, shape):
    inp = keras.Input(shape)
    layer(inp)
    return layer


def test_single_layer_macs_by_hand():
    # 10x12x3 -> 'same' stride 2 -> 5x6x8; each output does 3*5*3 MACs.
    conv = _layer_on(keras.layers.Conv2D(8, (3, 5), strides=2, padding="same"), (10, 12, 3))
    assert cm.layer_macs(conv) == 5 * 6 * 8 * (3 * 5 * 3)
    grouped = _layer_on(keras.layers.Conv2D(8, 3, groups=2), (9, 9, 4))
    assert cm.layer_macs(grouped) == 7 * 7 * 8 * (3 * 3 * 4 // 2)
    dense = _layer_on(keras.layers.Dense(7), (20,))
    assert cm.layer_macs(dense) == 20 * 7
    pointwise = _layer_on(keras.layers.Dense(3), (4, 5, 6))
    assert cm.layer_macs(pointwise) == 4 * 5 * 6 * 3
    depthwise = _layer_on(keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (8, 8, 4))
    assert cm.layer_macs(depthwise) == 8 * 8 * 4 * 2 * 9
    separable = _layer_on(keras.layers.SeparableConv2D(16, 3, depth_multiplier=2), (8, 8, 4))
    assert cm.layer_macs(separable) == 6 * 6 * 4 * 2 * 9 + 6 * 6 * 8 * 16
    transpose = _layer_on(keras.layers.Conv2DTranspose(5, 3, strides=2), (6, 7, 4))
    assert cm.layer_macs(transpose) == 6 * 7 * 4 * 9 * 5
    assert cm.layer_macs(_layer_on(keras.layers.BatchNormalization(), (6, 6, 4))) == 0
    assert cm.layer_macs(_layer_on(keras.layers.MaxPooling2D(), (6, 6, 4))) == 0


def test_vgg16_macs_and_params():
    model = keras.applications.VGG16(weights=None)
    macs = cm.count_macs(model)
    print(f"VGG16 MACs: {macs:,}")
    assert abs(macs - 15.47e9) / 15.47e9 < 0.01
    params = cm.count_params(model)
    assert params == {"total": 138_357_544, "trainable": 138_357_544, "non_trainable": 0}
    rows = cm.layer_table(model)
    assert sum(r["macs"] for r in rows) == macs
    assert sum(r["params"] for r in rows) == params["total"]


def test_resnet50_macs_equal_independent_count():
    model = keras.applications.ResNet50(weights=None)
    # Keras' ResNet50 is v1: the stride sits in the first 1x1 conv of each stage.
    expected = 112 * 112 * 64 * 7 * 7 * 3
    size, c_in = 56, 64
    for blocks, mid, out, stride in ((3, 64, 256, 1), (4, 128, 512, 2), (6, 256, 1024, 2), (3, 512, 2048, 2)):
        size //= stride
        area = size * size
        expected += area * (c_in * mid + mid * mid * 9 + mid * out + c_in * out)
        expected += (blocks - 1) * area * (out * mid + mid * mid * 9 + mid * out)
        c_in = out
    expected += 2048 * 1000
    macs = cm.count_macs(model)
    print(f"ResNet50 (keras, v1) MACs: {macs:,}")
    assert macs == expected
    assert abs(macs - 3.86e9) / 3.86e9 < 0.01
    params = cm.count_params(model)
    assert params["total"] == model.count_params() and params["non_trainable"] == 53_120


def test_mobilenet_v2_macs_match_paper():
    model = keras.applications.MobileNetV2(weights=None)
    macs = cm.count_macs(model)
    print(f"MobileNetV2 MACs: {macs:,}")
    assert abs(macs - 300e6) / 300e6 < 0.03


def test_format_table():
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, (7, 1), padding="same", name="tall")(inp)
    side = keras.layers.Lambda(lambda t: t, name="opaque")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, [keras.layers.Dense(1000, name="head")(x), side])
    rows = cm.layer_table(model)
    assert rows[0]["type"] == "InputLayer"
    assert sorted(r["name"] for r in rows[1:]) == ["gap", "head", "opaque", "tall"]
    assert rows[1]["output_shape"] == (16, 16, 4) and rows[1]["params"] == 7 * 1 * 3 * 4 + 4
    assert rows[1]["macs"] == 16 * 16 * 4 * 7 * 1 * 3
    text = cm.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "type", "output", "shape", "RF", "jump", "params", "MACs"]
    tall = next(line for line in lines if line.startswith("tall"))
    assert "7x1" in tall and "(16, 16, 4)" in tall and "21,504" in tall
    assert "?" in next(line for line in lines if line.startswith("opaque"))
    assert "global" in next(line for line in lines if line.startswith("gap"))
    assert "4,000" in next(line for line in lines if line.startswith("head"))
    assert lines[-1].startswith("Total params: 5,088 (trainable 5,088)") and "0.03 M (25,504)" in lines[-1]
    assert len({len(line) for line in lines[:3]}) <= 2  # header and rule line up
    assert "Total" not in cm.format_table(rows, totals=False)


# --------------------------------------------------------------------------------------
# drawing and import hygiene
# --------------------------------------------------------------------------------------

def test_draw_receptive_fields(tmp_path):
    from PIL import Image

    from convforge.visualize import draw_receptive_fields

    image_path = tmp_path / "cat.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(image_path)
    inp = keras.Input((48, 48, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c1")(inp)
    x = keras.layers.Conv2D(4, 5, strides=2, padding="same", name="c2")(x)
    x = keras.layers.Conv2D(4, 7, padding="same", name="c3")(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="gap")(x))
    out = tmp_path / "fields.png"
    assert draw_receptive_fields(model, image_path, ["c1", "c2", "c3"], out) == str(out)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 2 * img.height
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    with pytest.raises(ConvforgeError, match="missing.jpg"):
        draw_receptive_fields(model, tmp_path / "missing.jpg", ["c1"], tmp_path / "x.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ConvforgeError, match="broken.jpg"):
        draw_receptive_fields(model, tmp_path / "broken.jpg", ["c1"], tmp_path / "x.png")
    with pytest.raises(ConvforgeError, match=r"'cc3'.*did you mean 'c3'"):
        draw_receptive_fields(model, image_path, ["c1", "cc3"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_convmath_imports_no_tensorflow_or_keras():
    # Load convforge.errors and convforge.convmath from their files under a bare package
    # module, so convforge/__init__.py (which may import keras) cannot mask the result.
    code = textwrap.dedent(f"""
        import importlib.util, sys, types
        pkg = types.ModuleType("convforge")
        pkg.__path__ = [{str(SRC / "convforge")!r}]
        sys.modules["convforge"] = pkg
        for name in ("errors", "convmath"):
            spec = importlib.util.spec_from_file_location(
                "convforge." + name, {str(SRC / "convforge")!r} + "/" + name + ".py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        assert module.conv_output_size(224, 7, 2, "same") == 112
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "numpy", "jax", "torch"))
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
