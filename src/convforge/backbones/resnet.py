"""ResNet (He et al., CVPR 2016), ResNeXt (Xie et al., CVPR 2017) and SE-ResNet (Hu et al., CVPR 2018).

One builder: ResNeXt is a bottleneck ResNet with grouped 3x3 convs (`groups`, `base_width`) and SE-ResNet is
any of them with `se_ratio`. The default layout is torchvision's (v1.5: stride on the 3x3, convs without
bias, BN eps 1e-5); stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5 give keras.applications' ResNet.
"""
import keras

from convforge.backbones.common import level
from convforge.layers import conv_bn_act, max_pool, residual_block
from convforge.errors import ModelError, close_matches


def build_resnet(input_shape=(224, 224, 3), block="bottleneck", depths=(3, 4, 6, 3),
                 widths=(64, 128, 256, 512), groups=1, base_width=64, se_ratio=None, stride_in_1x1=False,
                 conv_bias=False, bn_epsilon=1e-5, stem="imagenet", output_stride=None, name="resnet50"):
    """A ResNet-family network: a 7x7/2 stem, a 3x3/2 max-pool, then four stages of `depths` blocks.

    stem="cifar" is the small-image stem of He et al. section 4.2: one 3x3/1 conv and no max-pool, so a
    32 px image keeps 32x32 features into stage 1 (the ImageNet stem would leave 8x8). Levels: C1 after the
    stem (stride 2, or 1 with the cifar stem) and C2..C5 after each stage (strides 4..32, or 1..8).
    output_stride=8 or 16 turns the strides of the stages past it into dilation (DeepLab, Chen et al. 2017, as
    torchvision's replace_stride_with_dilation: the conv that carried the stride keeps the previous rate), so C5
    stays at that stride with the same weights and receptive field size.
    """
    if stem not in STEMS:
        raise ModelError(f"resnet stem {stem!r} is unknown{close_matches(stem, STEMS)}; accepted: {', '.join(STEMS)}")
    inputs = keras.Input(input_shape, name="image")
    if stem == "cifar":
        x = conv_bn_act(inputs, widths[0], 3, 1, 1, use_bias=conv_bias, bn_epsilon=bn_epsilon, name="conv1")
        x = level(x, "C1")
    else:
        x = conv_bn_act(inputs, widths[0], 7, 2, 3, use_bias=conv_bias, bn_epsilon=bn_epsilon, name="conv1")
        x = level(x, "C1")
        x = max_pool(x, 3, 2, padding=1, name="pool1")
    if output_stride not in OUTPUT_STRIDES:
        raise ModelError(f"resnet output_stride={output_stride!r} is not accepted; accepted: "
                         f"{', '.join(map(str, OUTPUT_STRIDES))}")
    stride, rate = (1 if stem == "cifar" else 4), 1
    for stage, (depth, width) in enumerate(zip(depths, widths)):
        step, previous = (2 if stage > 0 else 1), rate
        if output_stride is not None and stride * step > output_stride:
            step, rate = 1, rate * step
        stride *= step
        for i in range(depth):
            x = residual_block(
                x, width, kind=block, strides=step if i == 0 else 1, groups=groups,
                base_width=base_width, se_ratio=se_ratio, stride_in_1x1=stride_in_1x1, conv_bias=conv_bias,
                bn_epsilon=bn_epsilon, dilation=rate, first_dilation=previous if i == 0 else rate,
                name=f"conv{stage + 2}_block{i + 1}",
            )
        x = level(x, f"C{stage + 2}")
    return keras.Model(inputs, x, name=name)


STEMS = ("imagenet", "cifar")
OUTPUT_STRIDES = (None, 8, 16, 32)
