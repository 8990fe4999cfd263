"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016): fire modules and a convolutional classifier."""
import keras
from keras import layers

from convforge.backbones.common import head_dtype, level, pool_features
from convforge.layers import fire_module, max_pool


def build_squeezenet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, pooling=None,
                     classifier_activation="softmax", stem=(96, 7), layout=(), dropout=0.5, name="squeezenet1_0"):
    """SqueezeNet from a layout of fire widths (squeeze, expand1x1, expand3x3) and "pool" (3x3/2, ceil mode).

    The top is the paper's: dropout, a 1x1 conv to num_classes with ReLU, global average pooling.
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
    if not include_top:
        return keras.Model(inputs, pool_features(x, pooling), name=name)
    x = layers.Dropout(dropout, name="top_dropout")(x)
    dtype = head_dtype()
    x = layers.Conv2D(num_classes, 1, activation="relu", dtype=dtype, name="classifier_conv")(x)
    x = layers.GlobalAveragePooling2D(dtype=dtype, name="avg_pool")(x)
    outputs = layers.Activation(classifier_activation, dtype=dtype, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
