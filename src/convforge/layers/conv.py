"""Convolution + batch-norm + activation, and pooling with PyTorch's explicit and ceil-mode padding."""
from keras import layers

from convforge.errors import ModelError


def _activation(name, act_name):
    """Return the Keras layer for an activation name ('relu6' is ReLU capped at 6, as in MobileNetV2)."""
    if act_name == "relu6":
        return layers.ReLU(max_value=6.0, name=name)
    return layers.Activation(act_name, name=name)


def explicit_padding(x, padding, name):
    """Apply PyTorch-style symmetric zero padding (int or (rows, cols)) and return the padded tensor."""
    if isinstance(padding, int):
        padding = (padding, padding)
    if tuple(padding) == (0, 0):
        return x
    return layers.ZeroPadding2D(padding, name=name)(x)


def conv_bn_act(
    x,
    filters,
    kernel_size,
    strides=1,
    padding="same",
    *,
    groups=1,
    dilation_rate=1,
    depthwise=False,
    use_bias=False,
    norm=True,
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    bn_scale=True,
    activation="relu",
    name,
):
    """Convolve (plain, grouped or depthwise), then batch-normalize and activate; `padding` may be an int.

    An int or tuple `padding` pads symmetrically like PyTorch (ZeroPadding2D + 'valid'), which differs from
    Keras' 'same' for strided convolutions on even inputs; 'same'/'valid' are passed to Keras unchanged.
    """
    if not isinstance(padding, str):
        x = explicit_padding(x, padding, f"{name}_pad")
        padding = "valid"
    if depthwise:
        x = layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, dilation_rate=dilation_rate,
            use_bias=use_bias, name=f"{name}_conv",
        )(x)
    else:
        x = layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding, groups=groups,
            dilation_rate=dilation_rate, use_bias=use_bias, name=f"{name}_conv",
        )(x)
    if norm:
        x = layers.BatchNormalization(
            epsilon=bn_epsilon, momentum=bn_momentum, scale=bn_scale, name=f"{name}_bn"
        )(x)
    if activation:
        x = _activation(f"{name}_{activation}", activation)(x)
    return x


def max_pool(x, pool_size, strides=None, padding=0, *, ceil_mode=False, name):
    """Max-pool with PyTorch semantics: explicit symmetric padding and optional ceil_mode.

    Ceil mode is emulated by zero padding at the bottom/right, which equals PyTorch's result because every
    architecture here pools non-negative (post-ReLU) maps, where an extra zero never wins the max.
    """
    strides = strides or pool_size
    if isinstance(padding, str):
        return layers.MaxPooling2D(pool_size, strides, padding=padding, name=name)(x)
    height, width = x.shape[1], x.shape[2]
    extra = []
    for size in (height, width):
        padded = size + 2 * padding
        if padded < pool_size:
            raise ModelError(
                f"layer {name!r} cannot max-pool a {size}-pixel-wide map with a {pool_size}-pixel window; "
                "use a larger input_shape"
            )
        out = -(-(padded - pool_size) // strides) + 1 if ceil_mode else (padded - pool_size) // strides + 1
        # PyTorch drops a last window that would start inside the right padding.
        if ceil_mode and (out - 1) * strides >= size + padding:
            out -= 1
        extra.append(max((out - 1) * strides + pool_size - padded, 0))
    pads = ((padding, padding + extra[0]), (padding, padding + extra[1]))
    if pads != ((0, 0), (0, 0)):
        x = layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size, strides, padding="valid", name=name)(x)
