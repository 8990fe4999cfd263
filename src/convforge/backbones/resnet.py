"""ResNet (He et al., CVPR 2016), ResNeXt (Xie et al., CVPR 2017) and SE-ResNet (Hu et al., CVPR 2018).

One builder: ResNeXt is a bottleneck ResNet with grouped 3x3 convs (`groups`, `base_width`) and SE-ResNet is
any of them with `se_ratio`. The default layout is torchvision's (v1.5: stride on the 3x3, convs without
bias, BN eps 1e-5); stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5 give keras.applications' ResNet.
"""
import keras

from convforge.backbones.common import gap_top, level
from convforge.layers import conv_bn_act, max_pool, residual_block
from convforge.errors import ModelError, close_matches
from convforge.registry import ModelSpec, Reference, register


def build_resnet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, pooling=None,
                 classifier_activation="softmax", block="bottleneck", depths=(3, 4, 6, 3),
                 widths=(64, 128, 256, 512), groups=1, base_width=64, se_ratio=None, stride_in_1x1=False,
                 conv_bias=False, bn_epsilon=1e-5, dropout=0.0, stem="imagenet", name="resnet50"):
    """A ResNet-family network: a 7x7/2 stem, a 3x3/2 max-pool, then four stages of `depths` blocks.

    stem="cifar" is the small-image stem of He et al. section 4.2: one 3x3/1 conv and no max-pool, so a
    32 px image keeps 32x32 features into stage 1 (the ImageNet stem would leave 8x8). Levels: C1 after the
    stem (stride 2, or 1 with the cifar stem) and C2..C5 after each stage (strides 4..32, or 1..8).
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
    for stage, (depth, width) in enumerate(zip(depths, widths)):
        for i in range(depth):
            x = residual_block(
                x, width, kind=block, strides=2 if (i == 0 and stage > 0) else 1, groups=groups,
                base_width=base_width, se_ratio=se_ratio, stride_in_1x1=stride_in_1x1, conv_bias=conv_bias,
                bn_epsilon=bn_epsilon, name=f"conv{stage + 2}_block{i + 1}",
            )
        x = level(x, f"C{stage + 2}")
    return keras.Model(inputs, gap_top(x, include_top=include_top, pooling=pooling, num_classes=num_classes,
                                       classifier_activation=classifier_activation, dropout=dropout), name=name)


STEMS = ("imagenet", "cifar")
_KERAS_STYLE = dict(stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5)
_HE = "He et al., Deep residual learning for image recognition, CVPR 2016"
_XIE = "Xie et al., Aggregated residual transformations for deep neural networks, CVPR 2017"
_HU = "Hu et al., Squeeze-and-excitation networks, CVPR 2018"
# name: options, paper, references, published GMACs
_VARIANTS = {
    "resnet18": (dict(block="basic", depths=(2, 2, 2, 2)), _HE,
                 (Reference(11_689_512, "trainable", "torchvision"),), 1.81),
    "resnet34": (dict(block="basic", depths=(3, 4, 6, 3)), _HE,
                 (Reference(21_797_672, "trainable", "torchvision"),), 3.66),
    "resnet50": (dict(depths=(3, 4, 6, 3)), _HE,
                 (Reference(25_557_032, "trainable", "torchvision"),
                  Reference(25_636_712, "total", "keras.applications", options=_KERAS_STYLE)), 4.09),
    "resnet101": (dict(depths=(3, 4, 23, 3)), _HE,
                  (Reference(44_549_160, "trainable", "torchvision"),
                   Reference(44_707_176, "total", "keras.applications", options=_KERAS_STYLE)), 7.80),
    "resnet152": (dict(depths=(3, 8, 36, 3)), _HE,
                  (Reference(60_192_808, "trainable", "torchvision"),
                   Reference(60_419_944, "total", "keras.applications", options=_KERAS_STYLE)), 11.51),
    "resnext50_32x4d": (dict(depths=(3, 4, 6, 3), groups=32, base_width=4), _XIE,
                        (Reference(25_028_904, "trainable", "torchvision"),), 4.23),
    "resnext101_32x8d": (dict(depths=(3, 4, 23, 3), groups=32, base_width=8), _XIE,
                         (Reference(88_791_336, "trainable", "torchvision"),), 16.41),
    "se_resnet50": (dict(depths=(3, 4, 6, 3), se_ratio=16), _HU,
                    (Reference(28_088_024, "trainable", "timm seresnet50 / Hu et al."),), 4.09),
}
for _name, (_options, _paper, _refs, _gmacs) in _VARIANTS.items():
    register(ModelSpec(name=_name, family="resnet", builder=build_resnet, options=_options, paper=_paper,
                       references=_refs, macs=_gmacs * 1e9))
