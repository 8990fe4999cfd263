"""Depthwise-separable convolution (MobileNet) and the inverted residual with linear bottleneck (MobileNetV2)."""
from keras import layers

from convforge.layers.conv import conv_bn_act


def depthwise_separable(x, filters, strides=1, *, bn_epsilon=1e-3, activation="relu", name):
    """A 3x3 depthwise conv followed by a 1x1 pointwise conv, each with BN and activation (Howard et al. 2017)."""
    x = conv_bn_act(x, None, 3, strides, "same", depthwise=True, bn_epsilon=bn_epsilon,
                    activation=activation, name=f"{name}_dw")
    return conv_bn_act(x, filters, 1, 1, "valid", bn_epsilon=bn_epsilon, activation=activation, name=f"{name}_pw")


def inverted_residual(x, filters, strides=1, expansion=6, *, bn_epsilon=1e-3, name):
    """Expand with 1x1 (ReLU6), filter with 3x3 depthwise (ReLU6), project linearly; add x when shapes allow.

    Sandler et al., CVPR 2018. 'same' padding on the strided depthwise conv equals keras.applications'
    explicit correct_pad, so weights carry over from it unchanged.
    """
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = conv_bn_act(y, in_channels * expansion, 1, 1, "same", bn_epsilon=bn_epsilon,
                        activation="relu6", name=f"{name}_expand")
    y = conv_bn_act(y, None, 3, strides, "same", depthwise=True, bn_epsilon=bn_epsilon,
                    activation="relu6", name=f"{name}_depthwise")
    y = conv_bn_act(y, filters, 1, 1, "same", bn_epsilon=bn_epsilon, activation=None,
                    name=f"{name}_project")
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y
