"""Squeeze-and-excitation (Hu et al., CVPR 2018): channel gates from globally pooled features."""
from keras import layers


def squeeze_excite(x, ratio=16, *, name):
    """Scale each channel of x by a sigmoid gate computed from its global average (reduction `ratio`)."""
    channels = x.shape[-1]
    reduced = max(1, channels // ratio)
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(reduced, 1, activation="relu", name=f"{name}_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])
