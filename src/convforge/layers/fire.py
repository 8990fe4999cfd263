"""SqueezeNet's fire module (Iandola et al. 2016): 1x1 squeeze, then parallel 1x1 and 3x3 expands."""
from keras import layers


def fire_module(x, squeeze, expand1x1, expand3x3, *, name):
    """Squeeze to `squeeze` channels and concatenate 1x1 and 3x3 expansions (all with bias and ReLU)."""
    s = layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    e1 = layers.Conv2D(expand1x1, 1, activation="relu", name=f"{name}_expand1x1")(s)
    e3 = layers.Conv2D(expand3x3, 3, padding="same", activation="relu", name=f"{name}_expand3x3")(s)
    return layers.Concatenate(name=f"{name}_concat")([e1, e3])
