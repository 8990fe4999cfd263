"""Residual blocks: basic (ResNet-18/34) and bottleneck (ResNet-50+), with grouped width (ResNeXt) and SE."""
from keras import layers

from convforge.layers.conv import conv_bn_act
from convforge.layers.se import squeeze_excite


def residual_block(
    x,
    filters,
    *,
    kind="bottleneck",
    strides=1,
    groups=1,
    base_width=64,
    se_ratio=None,
    stride_in_1x1=False,
    conv_bias=False,
    bn_epsilon=1e-5,
    dilation=1,
    first_dilation=None,
    name,
):
    """One residual block of He et al. 2016 (basic or bottleneck), returning relu(F(x) + shortcut(x)).

    `groups`/`base_width` give ResNeXt's grouped 3x3 (Xie et al. 2017), `se_ratio` adds squeeze-and-excitation
    before the addition (Hu et al. 2018), `stride_in_1x1` puts the stride on the first 1x1 conv as in the
    original paper and keras.applications (v1) instead of on the 3x3 as in torchvision (v1.5). `dilation` dilates
    the 3x3 convs (a dilated stage of DeepLab's backbone; stride 1 there), except the 3x3 where the stride would
    have been, which takes `first_dilation` (the previous stage's rate): the receptive field then grows exactly as
    with the stride.
    """
    first_dilation = dilation if first_dilation is None else first_dilation
    expansion = 4 if kind == "bottleneck" else 1
    out_channels = filters * expansion
    common = dict(use_bias=conv_bias, bn_epsilon=bn_epsilon)
    # Symmetric padding on strided 3x3 convs, as torchvision; 'same' would pad bottom/right only.
    pad3 = 1 if strides > 1 else "same"

    shortcut = x
    # A block whose stride became dilation keeps its projection shortcut, so a dilated network has the same weights.
    if strides != 1 or x.shape[-1] != out_channels or first_dilation != dilation:
        shortcut = conv_bn_act(
            x, out_channels, 1, strides, "valid", activation=None, name=f"{name}_0", **common
        )
    if kind == "basic":
        y = conv_bn_act(x, filters, 3, strides, pad3, dilation_rate=first_dilation, name=f"{name}_1", **common)
        y = conv_bn_act(y, filters, 3, 1, "same", dilation_rate=dilation, activation=None, name=f"{name}_2",
                        **common)
    elif kind == "bottleneck":
        width = int(filters * base_width / 64) * groups
        s1, s3 = (strides, 1) if stride_in_1x1 else (1, strides)
        y = conv_bn_act(x, width, 1, s1, "valid", name=f"{name}_1", **common)
        y = conv_bn_act(
            y, width, 3, s3, 1 if s3 > 1 else "same", groups=groups,
            dilation_rate=dilation if stride_in_1x1 else first_dilation, name=f"{name}_2", **common
        )
        y = conv_bn_act(y, out_channels, 1, 1, "valid", activation=None, name=f"{name}_3", **common)
    else:
        raise ValueError(f"residual block kind must be 'basic' or 'bottleneck', got {kind!r}")
    if se_ratio:
        y = squeeze_excite(y, se_ratio, name=f"{name}_se")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)
