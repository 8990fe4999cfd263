"""LeNet-5 (LeCun et al., Proc. IEEE 1998): two conv/subsample stages, C5, F6, output."""
import keras
from keras import layers

from convforge.backbones.common import level


def build_lenet(input_shape=(32, 32, 1), activation="tanh", name="lenet5"):
    """LeNet-5's feature extractor with tanh units and average-pool subsampling (the common modern reading).

    Its top (F6 with 84 tanh units, then the classifier) is heads.classification's "fc" top.

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
    return keras.Model(inputs, x, name=name)
