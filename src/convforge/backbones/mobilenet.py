"""MobileNetV2 (Sandler et al., CVPR 2018): inverted residuals with linear bottlenecks, the edge baseline."""
import keras

from convforge.backbones.common import level
from convforge.layers import conv_bn_act, inverted_residual

# Table 2 of the paper: expansion t, output channels c, repeats n, first stride s.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))


def make_divisible(value, divisor=8):
    """Round channels to a multiple of divisor without dropping more than 10% (the paper's reference code)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def build_mobilenet_v2(input_shape=(224, 224, 3), alpha=1.0, name="mobilenet_v2"):
    """MobileNetV2 with width multiplier `alpha`, in keras.applications' layout (BN eps 1e-3).

    Levels: C1..C5 are the last block at strides 2, 4, 8, 16, and the final 1x1 conv at stride 32.
    """
    opts = dict(bn_epsilon=1e-3, activation="relu6")
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, make_divisible(32 * alpha), 3, 2, "same", name="stem", **opts)
    stride, block = 2, 0
    for t, c, n, s in _STAGES:
        if s > 1:
            x = level(x, f"C{stride.bit_length() - 1}")
            stride *= s
        for i in range(n):
            x = inverted_residual(x, make_divisible(c * alpha), s if i == 0 else 1, t, bn_epsilon=1e-3,
                                  name=f"block{block}")
            block += 1
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = conv_bn_act(x, last, 1, 1, "same", name="head", **opts)
    x = level(x, "C5")
    return keras.Model(inputs, x, name=name)
