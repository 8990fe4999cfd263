"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016): fire modules and a convolutional classifier."""
import keras
from keras import layers

from convforge.backbones.common import level
from convforge.layers import fire_module, max_pool


def build_squeezenet(input_shape=(224, 224, 3), stem=(96, 7), layout=(), name="squeezenet1_0"):
    """SqueezeNet from a layout of fire widths (squeeze, expand1x1, expand3x3) and "pool" (3x3/2, ceil mode).

    Its top, the paper's dropout, 1x1 conv to the classes and global pooling, is heads.classification's "conv".
    Levels: C1 the stem (stride 2), then the map before each pool and the last fire (C2..C4, stride 4..16).
    """
    inputs = keras.Input(input_shape, name="image")
    filters, kernel = stem
    x = layers.Conv2D(filters, kernel, strides=2, activation="relu", name="conv1")(inputs)
    stage = 1
    fire = 2
    for item in layout:
        if item == "pool":
            x = level(x, f"C{stage}")
            x = max_pool(x, 3, 2, ceil_mode=True, name=f"pool{stage}")
            stage += 1
        else:
            x = fire_module(x, *item, name=f"fire{fire}")
            fire += 1
    x = level(x, f"C{stage}")
    return keras.Model(inputs, x, name=name)
