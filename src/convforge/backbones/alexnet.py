"""AlexNet (Krizhevsky et al., NeurIPS 2012): the torchvision layout and the paper's, with LRN and groups."""
import keras

from convforge.backbones.common import level
from convforge.layers import LocalResponseNormalization, conv_bn_act, max_pool


def build_alexnet(input_shape=(224, 224, 3), convs=(), name="alexnet"):
    """AlexNet's convolutional part from a table of conv rows (filters, kernel, stride, padding, groups, lrn,
    pool_after); its two 4096-unit FC layers are heads.classification's "fc" top (fc_units resizes them).

    Levels: C2 after conv1 (stride 4), C3 after conv2 (8), C4 after conv5 (16), C5 after the last pool (32).
    The top's `adaptive_pool` (torchvision) pools the last map to a fixed grid so the classifier fits any input
    size; Keras' adaptive pooling cannot upsample inside a traced graph, so inputs must keep that map >= 1x1
    before pooling to 6x6 (95 px and up).
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    stride_levels = {0: "C2", 1: "C3", len(convs) - 1: "C4"}
    for i, (filters, kernel, stride, padding, groups, lrn, pool_after) in enumerate(convs):
        x = conv_bn_act(x, filters, kernel, stride, padding, groups=groups, use_bias=True, norm=False,
                        name=f"conv{i + 1}")
        if lrn:
            x = LocalResponseNormalization(name=f"conv{i + 1}_lrn")(x)
        x = level(x, stride_levels[i]) if i in stride_levels else x
        if pool_after:
            x = max_pool(x, 3, 2, name=f"pool{i + 1}")
    x = level(x, "C5")
    return keras.Model(inputs, x, name=name)
