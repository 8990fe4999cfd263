"""LeNet-5 (LeCun et al., Proc. IEEE 1998): two conv/subsample stages, C5, F6, output."""
import keras
from keras import layers

from convforge.backbones.common import classifier, level, pool_features


def build_lenet(input_shape=(32, 32, 1), num_classes=10, include_top=True, pooling=None,
                classifier_activation="softmax", activation="tanh", name="lenet5"):
    """LeNet-5 with tanh units and average-pool subsampling (the common modern reading of the paper).

    The paper's trainable subsampling coefficients and sparse C3 connection table are replaced by plain
    average pooling and a full C3, which gives the widely quoted 61,706 parameters at 32x32x1, 10 classes.
    """
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(6, 5, activation=activation, name="c1")(inputs)
    x = layers.AveragePooling2D(2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation=activation, name="c3")(x)
    x = level(x, "C1")
    x = layers.AveragePooling2D(2, name="s4")(x)
    x = layers.Conv2D(120, 5, activation=activation, name="c5")(x)
    x = level(x, "C2")
    if not include_top:
        return keras.Model(inputs, pool_features(x, pooling), name=name)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(84, activation=activation, name="f6")(x)
    return keras.Model(inputs, classifier(x, num_classes, classifier_activation), name=name)
