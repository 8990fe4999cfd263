"""Weight-for-weight parity of convforge's builders with keras.applications.

For each family that convforge lays out like keras.applications, both models are built at a small input
(weights=None, no download), every weight of the keras model is copied into ours layer by layer (the
weight-bearing layers of each model, in model order, paired one to one), and the two must then compute the
same logits. The keras side's BatchNormalization statistics (moving mean/variance, gamma, beta) and all biases
are first set to random values, so a BN or bias copied into the wrong layer shows up in the outputs; a negative
control then resets our model's BN statistics (or biases, for VGG) and checks the outputs move far beyond the
tolerance, which proves the comparison can fail. BN epsilons are compared directly (1e-5 versus keras'
1.001e-5 changes outputs by far less than any tolerance).
"""
import dataclasses
import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import convforge  # noqa: E402

NUM_CLASSES = 10
# Absolute tolerance on logits of magnitude ~1 (scaled up for larger logits, see _tolerance). On CPU the two
# models run the very same kernels in the same order, so the measured difference is 0.0 for every family;
# the tolerance only leaves room for a backend that fuses or reorders differently.
ATOL = 1e-5
KERAS_RESNET = dict(stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5)


@dataclasses.dataclass(frozen=True)
class Case:
    application: str  # keras.applications constructor
    ours: str  # convforge registered name
    input_shape: tuple = (64, 64, 3)
    options: dict = dataclasses.field(default_factory=dict)  # convforge build options
    keras_options: dict = dataclasses.field(default_factory=dict)  # extra keras.applications arguments
    input_scale: float = 1.0  # inputs are uniform in [-scale, scale]


CASES = {
    "vgg16": Case("VGG16", "vgg16", input_scale=50.0),  # VGG expects caffe-style inputs of magnitude ~100
    "vgg19": Case("VGG19", "vgg19", input_scale=50.0),
    "resnet50": Case("ResNet50", "resnet50", options=KERAS_RESNET),
    "resnet101": Case("ResNet101", "resnet101", options=KERAS_RESNET),
    "inception_v3": Case("InceptionV3", "inception_v3", input_shape=(75, 75, 3)),  # keras' minimum size
    "densenet121": Case("DenseNet121", "densenet121", options=dict(bn_epsilon=1.001e-5)),
    "mobilenet_v2": Case("MobileNetV2", "mobilenet_v2"),
    # alpha=1.4 rounds fractional widths (make_divisible) and widens the last 1x1 conv.
    "mobilenet_v2_alpha1.4": Case("MobileNetV2", "mobilenet_v2", options=dict(alpha=1.4),
                                  keras_options=dict(alpha=1.4)),
}


def _weighted_layers(model):
    """The layers of `model` that hold weights, in model order (Identity levels, pools, ... hold none)."""
    return [layer for layer in model.layers if layer.weights]


def _randomize(model, rng):
    """Give every BN random gamma/beta/moving statistics (variance > 0) and every bias random values."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.2, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
            if layer.gamma is not None:  # InceptionV3's BN has scale=False
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0.0, 0.2, channels).astype("float32"))
        elif getattr(layer, "bias", None) is not None and getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(0.0, 0.05, layer.bias.shape).astype("float32"))


def _copy_weights(source, target):
    """Copy source's weights into target layer by layer; assert both have the same weight-bearing layers."""
    src, dst = _weighted_layers(source), _weighted_layers(target)
    assert len(src) == len(dst), (
        f"{len(src)} weight-bearing layers in keras.applications' {source.name} but {len(dst)} in convforge's "
        f"{target.name}; first names: {[l.name for l in src[:3]]} vs {[l.name for l in dst[:3]]}"
    )
    for i, (a, b) in enumerate(zip(src, dst)):
        shapes_a = [tuple(w.shape) for w in a.weights]
        shapes_b = [tuple(w.shape) for w in b.weights]
        assert type(a) is type(b) and shapes_a == shapes_b, (
            f"weight-bearing layer #{i}: keras {a.name!r} ({type(a).__name__}, {shapes_a}) does not match "
            f"convforge {b.name!r} ({type(b).__name__}, {shapes_b})"
        )
        if isinstance(a, keras.layers.BatchNormalization):
            # An epsilon of 1e-5 instead of keras' 1.001e-5 moves outputs by ~1e-8: check it directly.
            assert abs(a.epsilon - b.epsilon) <= 1e-12 * a.epsilon, (
                f"BN #{i}: keras {a.name!r} has epsilon {a.epsilon!r}, convforge {b.name!r} {b.epsilon!r}"
            )
        b.set_weights(a.get_weights())
    return len(src)


def _tolerance(reference):
    return ATOL * max(1.0, float(np.abs(reference).max()))


def _build_pair(case):
    kwargs = dict(weights=None, include_top=True, input_shape=case.input_shape, classes=NUM_CLASSES,
                  classifier_activation=None, **case.keras_options)
    theirs = getattr(keras.applications, case.application)(**kwargs)
    ours = convforge.build_backbone(case.ours, input_shape=case.input_shape, num_classes=NUM_CLASSES,
                                    include_top=True, classifier_activation=None, **case.options)
    return theirs, ours


@pytest.mark.parametrize("family", list(CASES))
def test_weights_carry_over_from_keras_applications(family, record_property):
    case = CASES[family]
    rng = np.random.default_rng(1234)
    theirs, ours = _build_pair(case)
    try:
        assert ours.count_params() == theirs.count_params(), (
            f"{family}: convforge has {ours.count_params():,} parameters, keras.applications "
            f"{theirs.count_params():,} at input {case.input_shape}"
        )
        assert tuple(ours.outputs[0].shape) == tuple(theirs.outputs[0].shape)

        _randomize(theirs, rng)
        _copy_weights(theirs, ours)

        x = rng.uniform(-case.input_scale, case.input_scale, (2, *case.input_shape)).astype("float32")
        expected = keras.ops.convert_to_numpy(theirs(x, training=False))
        got = keras.ops.convert_to_numpy(ours(x, training=False))
        scale = float(np.abs(expected).max())
        # Tiny logits would make any absolute tolerance vacuous; huge ones would mean the random BN
        # statistics blew the activations up. Either way the comparison would not prove much.
        assert 0.05 < scale < 1e3, f"{family}: reference logits have max |y| = {scale:g}; adjust input_scale"
        delta = float(np.abs(expected - got).max())
        record_property("max_abs_delta", delta)
        record_property("max_abs_logit", scale)
        print(f"\n{family}: max |delta| = {delta:.3g} on logits of max |y| = {scale:.3g}")
        tolerance = _tolerance(expected)
        assert delta <= tolerance, (
            f"{family}: outputs differ by {delta:.3g} (logits up to {scale:.3g}, tolerance {tolerance:.3g})"
        )

        # Negative control: the comparison must be able to fail. Reset what _randomize set on our side.
        bns = [l for l in ours.layers if isinstance(l, keras.layers.BatchNormalization)]
        if bns:
            for layer in bns:
                layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
                layer.moving_variance.assign(np.ones(layer.moving_variance.shape, "float32"))
        else:
            for layer in _weighted_layers(ours):
                if getattr(layer, "use_bias", False):
                    layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
        perturbed = keras.ops.convert_to_numpy(ours(x, training=False))
        assert np.abs(expected - perturbed).max() > 1000 * tolerance, (
            f"{family}: resetting {'BN statistics' if bns else 'biases'} barely changed the output; "
            "the parity check is not sensitive to them"
        )
    finally:
        del theirs, ours
        keras.backend.clear_session()
        gc.collect()
