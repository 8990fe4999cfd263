"""Receptive fields of convforge's real backbones, checked against measured gradients and published figures.

tests/test_convmath.py proves the arithmetic on hand-made networks; here the same arithmetic must hold on the
architectures we ship: ceil-mode pools emulated with ZeroPadding2D, inception branches, 1x7/7x1 kernels,
DenseNet concatenations, strided depthwise 'same' convolutions, residual additions.

How the field is measured. A unit's theoretical field is the set of input pixels joined to it by at least one
path of non-zero weights. To see it in a gradient we make every path count and none cancel:
* the model is cloned with keras.models.clone_model; MaxPooling2D becomes AveragePooling2D with the same
  pool/strides/padding (max-pooling routes the gradient to one pixel per window, averaging to all of them);
* every kernel is the constant 1/fan_in and every bias 0; BatchNormalization is kept but set to
  gamma=1, beta=0, mean=0, var=1; with the all-ones input every pre-activation is then positive, so ReLU
  passes every gradient unchanged;
* each convolution keeps PROBE_WIDTH output channels (a multiple of its groups) instead of 64..2048: which
  pixels are connected depends only on kernel sizes, strides, dilations and padding (every channel of a
  plain conv reads every input channel; grouped and depthwise convs read the same window per channel), and
  it makes the float64 forward/backward ~20x cheaper;
* ReLU6 (MobileNetV2) becomes an uncapped ReLU and sigmoid/tanh activations become linear: a saturated
  unit has zero gradient and would hide pixels the architecture does connect (the residual sums of
  MobileNetV2's clone reach ~400, far past ReLU6's cap of 6);
* the clone computes in float64: the pixel at the edge of a deep field is reached only through the extreme
  tap of every layer, so its gradient shrinks like (1/k)**depth. The smallest non-zero values here are
  ~1e-13, but DenseNet-121's C3 at 224 px already gets 6e-33, near float32's 1e-38 floor (and TensorFlow's
  CPU kernels flush float32 denormals to zero); float64 keeps these tests valid at larger sizes.
Then the box of pixels with a non-zero d(sum over channels of unit (i, j))/d(input) must equal
ReceptiveField.clipped_box(i, j) exactly. All probes of one model run in a single backward pass: sample b of
a batch of identical inputs carries probe b's unit, so the gradient of their sum w.r.t. input b is probe b's.

Input sizes are chosen so that no 'valid' strided layer drops the last row/column (e.g. Inception v3 at 107:
107 -> 53 -> 51 -> 25 -> 23 -> 11 -> 5 -> 2, every stride-2 window ending on the last pixel). Where a layer
does drop it, the geometric (Distill) field is a strict superset of the measured one: see
test_dropped_border_pixel_is_credited_through_later_padding.

The heaviest models of the every-architecture test are skipped unless CONVFORGE_SLOW=1.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import convforge
from convforge.backbones.common import feature_levels, level_strides

SLOW = os.environ.get("CONVFORGE_SLOW") == "1"
# Each takes 2.5-3 s to build on a 2-core CPU (vgg19_bn less, but it adds nothing vgg19 + vgg11_bn miss).
HEAVY = {"resnet152", "resnext101_32x8d", "densenet201", "densenet161", "vgg19_bn"}

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

PROBE_WIDTH = 4  # output channels of each conv in the measuring clone
# Models built by more than one test are kept; anything else is built afresh and freed after its test.
_SHARED = {("vgg11", 64, ()), ("densenet121", 64, ()), ("se_resnet50", 64, ()), ("resnet50", 64, ()),
           ("resnet50", 224, ()), ("resnet50", 224, (("stride_in_1x1", True),))}
_cache = {}


def _build(name, size, **options):
    """Build a backbone without top at size x size (its own channel count), cached for _SHARED keys."""
    key = (name, size, tuple(sorted(options.items())))
    if key in _cache:
        return _cache[key]
    channels = convforge.get_spec(name).default_input_shape[2]
    model = convforge.build_backbone(name, input_shape=(size, size, channels), include_top=False, **options)
    if key in _SHARED:
        _cache[key] = model
    return model


def _probe_layer(layer):
    """clone_function: a float64 copy of layer in which every connected pixel gets a positive gradient."""
    config = layer.get_config()
    config["dtype"] = "float64"
    if isinstance(layer, keras.layers.MaxPooling2D):
        return keras.layers.AveragePooling2D(config["pool_size"], config["strides"], padding=config["padding"],
                                             data_format=config["data_format"], name=layer.name, dtype="float64")
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
        # Width does not decide which pixels connect: keep a few channels (a multiple of the groups).
        groups = config.get("groups", 1)
        config["filters"] = max(groups, min(config["filters"], PROBE_WIDTH) // groups * groups)
    if isinstance(layer, keras.layers.ReLU):
        # ReLU6 saturates; with positive values an uncapped ReLU has the same (all-ones) derivative pattern.
        return keras.layers.ReLU(name=layer.name, dtype="float64")
    if config.get("activation") in ("sigmoid", "tanh", "hard_sigmoid"):
        config["activation"] = "linear"
    return type(layer).from_config(config)


def _probe_clone(model):
    """Return the measuring clone of model: average pools, slim 1/fan_in kernels, unit BN, float64."""
    inputs = keras.Input(model.input.shape[1:], dtype="float64", name="image")
    clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=_probe_layer)
    for layer in clone.layers:
        for w in layer.weights:
            name = w.path.rsplit("/", 1)[-1]
            if name == "kernel":
                taps = w.shape[:2] if isinstance(layer, keras.layers.DepthwiseConv2D) else w.shape[:-1]
                value = 1.0 / int(np.prod(taps))
            elif name in ("gamma", "moving_variance"):
                value = 1.0
            elif name in ("bias", "beta", "moving_mean"):
                value = 0.0
            else:
                raise AssertionError(f"no probe value for weight {w.path} of {type(layer).__name__}")
            w.assign(np.full(w.shape, value))
    return clone


def _measured_boxes(model, probes):
    """Return, for each (layer name, i, j) of probes, the inclusive (top, left, bottom, right) box of input
    pixels with a non-zero gradient of that unit (channels summed), or None if there is none."""
    clone = _probe_clone(model)
    names = sorted({name for name, _, _ in probes})
    probe_model = keras.Model(clone.input, [clone.get_layer(n).output for n in names])
    h, w, c = model.input.shape[1:]
    x = tf.ones((len(probes), h, w, c), dtype="float64")
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = probe_model(x)
        outputs = dict(zip(names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
        total = tf.add_n([tf.reduce_sum(outputs[n][b, i, j]) for b, (n, i, j) in enumerate(probes)])
    grads = tape.gradient(total, x).numpy().sum(axis=-1)
    # Positive weights on a positive input: no path can cancel another.
    assert (grads >= 0).all()
    boxes = []
    for g in grads:
        rows, cols = np.nonzero(g)
        boxes.append((int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())) if rows.size else None)
    return boxes


def _probes(model, names):
    """Corner, centre and far-corner units (plus two asymmetric ones) of each named layer."""
    probes = []
    for name in names:
        oh, ow = model.get_layer(name).output.shape[1:3]
        units = {(0, 0), (oh // 2, ow // 2), (oh - 1, ow - 1), (0, ow - 1), (min(1, oh - 1), ow // 2)}
        probes += [(name, i, j) for i, j in sorted(units)]
    return probes


def _compare(model, names):
    """Return (probe, measured box, computed clipped box, field) for every probe of names."""
    rfs = convforge.receptive_fields(model, strict=True)
    h, w = model.input.shape[1:3]
    probes = _probes(model, names)
    measured = _measured_boxes(model, probes)
    return [(p, m, rfs[p[0]].clipped_box(p[1], p[2], h, w), rfs[p[0]]) for p, m in zip(probes, measured)]


# --------------------------------------------------------------------------------------
# computed field == gradient-measured field on the real architectures
# --------------------------------------------------------------------------------------

# name, input size, inner layers probed besides the feature levels C2..C5 (and what each one exercises).
CASES = [
    # basic blocks: symmetric ZeroPadding2D + 'valid' strided 3x3, 1x1/2 shortcut, Add; padded 3x3/2 pool
    ("resnet18", 96, ["pool1", "conv3_block1_1_conv", "conv3_block1_add"]),
    # even-sized fields (2x2 pools) with half-pixel starts
    ("vgg11", 64, ["block1_pool", "block3_conv2_conv"]),
    # ceil-mode pools (ZeroPadding2D at bottom/right), 'same' 3x3/1 pool inside a branch, 4-way concat
    ("googlenet", 96, ["pool2", "inception3a", "inception4a_b3_0_maxpool"]),
    # 'valid' strided stem and grid reductions, 1x7 / 7x1 kernels (rectangular fields)
    ("inception_v3", 107, ["stem_pool1", "mixed3", "mixed4_b2_1_conv"]),
    # dense concatenations, BN-ReLU-conv, 2x2 average-pool transitions
    ("densenet121", 64, ["conv2_block6_concat", "pool2_pool"]),
    # strided depthwise 'same' (odd pixel after), ReLU6, linear bottleneck + Add
    ("mobilenet_v2", 96, ["block1_depthwise_conv", "block2_add"]),
    # 'valid' stride-2 stem, fire modules (1x1 | 3x3 concat), ceil-mode pools; 97 so no pixel is dropped
    ("squeezenet1_1", 97, ["pool1", "fire2_concat"]),
]


@pytest.mark.parametrize("name,size,inner", CASES, ids=[f"{n}@{s}" for n, s, _ in CASES])
def test_computed_field_equals_gradient_field(name, size, inner):
    model = _build(name, size)
    levels = [k for k in feature_levels(model) if k != "C1"]
    assert levels == ["C2", "C3", "C4", "C5"] or (name.startswith("squeezenet") and levels == ["C2", "C3", "C4"])
    results = _compare(model, levels + inner)
    bad = [f"{p}: measured {m} != computed {c} ({rf})" for p, m, c, rf in results if m != c]
    assert not bad, "\n".join(bad)
    # The probes are not all trivial: some boxes end inside the image on at least one side.
    assert any(c != (0, 0, size - 1, size - 1) for _, _, c, _ in results)


def test_rectangular_fields_of_inception_v3_factorized_kernels():
    # At 299 the 17x17 grid's 1x7/7x1 fields (up to 351x255) still end inside the image, so each axis is
    # checked on its own. Only the graph up to mixed4 is cloned, to keep it cheap.
    full = _build("inception_v3", 299)
    model = keras.Model(full.input, full.get_layer("mixed4_b2_3_conv").output)
    rfs = convforge.receptive_fields(model, strict=True)
    # mixed3 (17x17, jump 16) -> 1x1 -> 7x1 adds 6*16 rows -> 1x7 adds 6*16 columns -> 7x1 rows again,
    # unit (i, j) centred on pixel 21 + 16 i (stem and reductions are 'valid').
    assert rfs["mixed4_b2_1_conv"].start == (21.0, 21.0)
    assert rfs["mixed3"].size == (159, 159) and rfs["mixed3"].jump == (16, 16)
    assert rfs["mixed4_b2_1_conv"].size == (255, 159)
    assert rfs["mixed4_b2_2_conv"].size == (255, 255)
    assert rfs["mixed4_b2_3_conv"].size == (351, 255)
    names = ["mixed4_b2_1_conv", "mixed4_b2_2_conv", "mixed4_b2_3_conv"]
    results = _compare(model, names)
    bad = [f"{p}: measured {m} != computed {c} ({rf})" for p, m, c, rf in results if m != c]
    assert not bad, "\n".join(bad)
    # Centre unit (8, 8) of mixed4_b2_1_conv (after the first 7x1): rows 149 +- 127, columns 149 +- 79.
    by_probe = {p: m for p, m, _, _ in results}
    assert by_probe[("mixed4_b2_1_conv", 8, 8)] == (22, 70, 276, 228)


def test_dropped_border_pixel_is_credited_through_later_padding():
    # squeezenet1_1 at 96: conv1 (3x3/2 'valid') has 47 windows covering pixels 0..94, so pixel 95 reaches
    # nothing. pool1's ceil mode then pads conv1's map with a 48th position whose geometric field is
    # 94..96; convmath, like the Distill article, counts padding as part of a field, so units near the
    # bottom/right edge are credited with pixel 95. The computed box is then one pixel larger than the
    # measured one there, and equal everywhere else: a property of the geometric convention (a field is one
    # box with one size, jump and start), not an arithmetic error. An odd size (97) removes it (see CASES).
    model = _build("squeezenet1_1", 96)
    results = _compare(model, ["C2", "C3", "C4"])
    differing = 0
    for p, m, c, rf in results:
        assert m is not None and c is not None
        assert c[0] <= m[0] and c[1] <= m[1] and c[2] >= m[2] and c[3] >= m[3], (p, m, c, rf)
        for a, b in zip(m, c):
            if a != b:
                differing += 1
                assert (a, b) == (94, 95), (p, m, c, rf)
    assert differing > 0


# --------------------------------------------------------------------------------------
# published figures: ResNet-50, torchvision v1.5 vs the original v1
# --------------------------------------------------------------------------------------

def test_resnet50_receptive_field_427_for_torchvision_v15_and_483_for_v1():
    # Hand derivation (r: field, j: jump), stem 7x7/2 -> r=7, j=2; max-pool 3x3/2 -> r=11, j=4.
    # torchvision v1.5 (our default, stride on the 3x3 of each stage's first block):
    #   conv2: 3 blocks x one 3x3 at j=4:          11 + 3*2*4  = 35,  j=4
    #   conv3: 3x3/2 at j=4, then 3 x 3x3 at j=8:   35 + 8 + 3*16 = 91,  j=8
    #   conv4: 3x3/2 at j=8, then 5 x 3x3 at j=16:  91 + 16 + 5*32 = 267, j=16
    #   conv5: 3x3/2 at j=16, then 2 x 3x3 at j=32: 267 + 32 + 2*64 = 427, j=32
    # original v1 / keras.applications (stride on the first 1x1, which adds no size), so each stage's first
    # 3x3 already runs at the new jump:
    #   conv3: 35 + 4*16 = 99; conv4: 99 + 6*32 = 291; conv5: 291 + 3*64 = 483
    # 483 is the ResNet-50 figure of Araujo et al., Distill 2019, computed on TF-slim's resnet_v1_50, whose
    # stride sits on the 3x3 of each stage's *last* unit: the same number of 3x3s runs at each jump as with
    # the stride on the first 1x1, hence the same 483. torchvision (v1.5) moves the stride onto the first
    # unit's 3x3, so one 3x3 per stage runs at the old, smaller jump: 427.
    v15 = convforge.receptive_fields(_build("resnet50", 224), strict=True)
    v1 = convforge.receptive_fields(_build("resnet50", 224, stride_in_1x1=True), strict=True)
    expected_v15 = {"C1": 7, "C2": 35, "C3": 91, "C4": 267, "C5": 427}
    expected_v1 = {"C1": 7, "C2": 35, "C3": 99, "C4": 291, "C5": 483}
    for level, size in expected_v15.items():
        assert v15[level].size == (size, size), level
        assert v15[level].jump == v1[level].jump == (2 ** int(level[1]),) * 2
    for level, size in expected_v1.items():
        assert v1[level].size == (size, size), level
    # Symmetric padding throughout: unit (i, j) of C5 is centred on pixel (32 i, 32 j).
    assert v15["C5"].start == v1["C5"].start == (0.0, 0.0)
    assert v15["C5"].box(3, 3) == (96 - 213, 96 - 213, 96 + 213, 96 + 213)
    # Independent check of the v1 layout: keras.applications' ResNet50 (stride on the first 1x1) gives 483.
    reference = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    ref = convforge.receptive_fields(reference, strict=True)
    assert [ref[f"conv{s}_block{b}_out"].size[0] for s, b in ((2, 3), (3, 4), (4, 6), (5, 3))] == [35, 99, 291, 483]


def test_resnet50_stride_placement_measured_by_gradient():
    # The 91 vs 99 difference at C3 (which grows to 427 vs 483 at C5) measured on the real blocks: both
    # layouts at 224, cut at C3 (28x28, jump 8, unit (i, j) centred on pixel (8 i, 8 j)); the centre unit
    # (14, 14) sees 112 +- 45 (v1.5) or 112 +- 49 (v1).
    for options, half in (({}, 45), ({"stride_in_1x1": True}, 49)):
        full = _build("resnet50", 224, **options)
        model = keras.Model(full.input, full.get_layer("C3").output)
        results = _compare(model, ["C3", "conv3_block1_add"])
        bad = [f"{p}: measured {m} != computed {c} ({rf})" for p, m, c, rf in results if m != c]
        assert not bad, "\n".join(bad)
        by_probe = {p: m for p, m, _, _ in results}
        assert by_probe[("C3", 14, 14)] == (112 - half, 112 - half, 112 + half, 112 + half), options


def test_se_resnet50_later_layers_carry_global_context():
    # Squeeze-and-excitation gates every channel by a global average, so after the first SE block each unit
    # also depends on the whole image; convmath keeps the local box and flags global_context.
    model = _build("se_resnet50", 64)
    rfs = convforge.receptive_fields(model, strict=True)
    assert rfs["conv2_block1_se_squeeze"].is_global
    assert not rfs["C1"].global_context and not rfs["pool1"].global_context
    assert not rfs["conv2_block1_3_bn"].global_context
    assert rfs["conv2_block1_se_scale"].global_context and not rfs["conv2_block1_se_scale"].is_global
    plain = convforge.receptive_fields(_build("resnet50", 64), strict=True)
    for level in ("C2", "C3", "C4", "C5"):
        assert rfs[level].global_context and not rfs[level].is_global
        # The local part is the plain ResNet-50's field.
        assert (rfs[level].size, rfs[level].jump, rfs[level].start) == (
            plain[level].size, plain[level].jump, plain[level].start)


# --------------------------------------------------------------------------------------
# every registered architecture can be followed
# --------------------------------------------------------------------------------------

def _model_groups():
    """One test per family (conftest clears the Keras session around every test, ~0.5 s each), and one
    for the heavy builds, skipped unless CONVFORGE_SLOW=1."""
    families = {}
    for name in convforge.list_models():
        if name not in HEAVY:
            families.setdefault(convforge.get_spec(name).family, []).append(name)
    params = [pytest.param(names, id=family) for family, names in sorted(families.items())]
    params.append(pytest.param(sorted(HEAVY), id="heavy",
                               marks=pytest.mark.skipif(not SLOW, reason="heavy builds; set CONVFORGE_SLOW=1")))
    return params


# Families whose feature maps divide the input exactly at sizes divisible by 32 ('same' or symmetric
# padding), so level_strides (measured from shapes) must equal the jump. AlexNet, SqueezeNet, LeNet and
# Inception v3 use 'valid' windows (e.g. alexnet at 64: C3 is 7x7, 64/7 rounds to 9, not 8).
EXACT_SHAPE_FAMILIES = {"resnet", "densenet", "vgg", "googlenet", "mobilenet"}


def test_declared_levels_follow_the_cifar_stem():
    """ResNet's small-image stem quarters every stride; the registry says so without building."""
    spec = convforge.get_spec("resnet18")
    model = _build("resnet18", 32, stem="cifar", widths=(8, 8, 8, 8))
    assert level_strides(model) == spec.feature_levels({"stem": "cifar"}) == {
        "C1": 1, "C2": 1, "C3": 2, "C4": 4, "C5": 8}
    assert spec.feature_levels() == {"C1": 2, "C2": 4, "C3": 8, "C4": 16, "C5": 32}


def test_every_registered_model_is_covered():
    assert set(HEAVY) <= set(convforge.list_models())
    covered = [n for p in _model_groups() for n in p.values[0]]
    assert sorted(covered) == convforge.list_models()


@pytest.mark.parametrize("names", _model_groups())
def test_every_registered_model_has_a_field_for_every_layer(names):
    for name in names:
        spec = convforge.get_spec(name)
        size = max(spec.min_input_size, 64)
        model = _build(name, size)
        rfs = convforge.receptive_fields(model, strict=True)  # strict: raises on any layer it cannot follow
        assert set(rfs) == {layer.name for layer in model.layers}
        missing = [layer for layer, rf in rfs.items() if rf is None]
        assert not missing, f"{name}: no receptive field for {missing}"
        levels = feature_levels(model)
        assert levels, f"{name} has no feature levels"
        # The registry declares each backbone's levels without building it (for heads and `convforge models`).
        assert {lv: rfs[lv].jump[0] for lv in levels} == spec.feature_levels(), name
        previous = 0
        for level in levels:
            rf = rfs[level]
            k = int(level[1:])
            # Every strided layer of every family halves the map, so Ck is always 2**k pixels apart.
            assert not rf.is_global and rf.jump == (2 ** k, 2 ** k), (name, level, rf)
            assert rf.size[0] == rf.size[1] > previous, (name, level, rf)
            previous = rf.size[0]
        if size % 32 == 0 and spec.family in EXACT_SHAPE_FAMILIES:
            assert level_strides(model) == {level: rfs[level].jump[0] for level in levels}, name
