"""VGG (Simonyan & Zisserman, ICLR 2015): stacks of 3x3 convs between 2x2 max-pools, with or without BN."""
import keras
from keras import layers

from convforge.backbones.common import classifier, level, pool_features
from convforge.layers import conv_bn_act
from convforge.registry import ModelSpec, Reference, register


def build_vgg(input_shape=(224, 224, 3), num_classes=1000, include_top=True, pooling=None,
              classifier_activation="softmax", blocks=(), batch_norm=False, dropout=0.5,
              widths=(64, 128, 256, 512, 512), fc_units=4096, name="vgg16"):
    """VGG from `blocks`, the number of 3x3 convs in each of the five blocks (filters `widths`, 64..512).

    fc_units sizes the two hidden Dense layers (4096 in the paper; 512 is the usual small-image choice).

    Levels: C1..C4 are the last conv of blocks 2..5 (strides 2..16), C5 the last pool (stride 32).
    Layer names follow keras.applications (block1_conv1 ... fc1, fc2, predictions).
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for b, (convs, filters) in enumerate(zip(blocks, widths), start=1):
        for c in range(1, convs + 1):
            # torchvision's vgg*_bn keep the conv bias in front of BN; their parameter counts include it.
            x = conv_bn_act(x, filters, 3, 1, "same", use_bias=True, norm=batch_norm,
                            name=f"block{b}_conv{c}")
        if b > 1:
            x = level(x, f"C{b - 1}")
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    x = level(x, "C5")
    if not include_top:
        return keras.Model(inputs, pool_features(x, pooling), name=name)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(fc_units, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return keras.Model(inputs, classifier(x, num_classes, classifier_activation), name=name)


_PAPER = "Simonyan & Zisserman, Very deep convolutional networks for large-scale image recognition, ICLR 2015"
# name: convs per block, torchvision params (no BN), torchvision params (BN, trainable), published GMACs
_VARIANTS = {
    "vgg11": ((1, 1, 2, 2, 2), 132_863_336, 132_868_840, 7.61),
    "vgg13": ((2, 2, 2, 2, 2), 133_047_848, 133_053_736, 11.31),
    "vgg16": ((2, 2, 3, 3, 3), 138_357_544, 138_365_992, 15.47),
    "vgg19": ((2, 2, 4, 4, 4), 143_667_240, 143_678_248, 19.63),
}
for _name, (_blocks, _plain, _bn, _gmacs) in _VARIANTS.items():
    _refs = (Reference(_plain, "total", "torchvision"),)
    if _name in ("vgg16", "vgg19"):
        _refs += (Reference(_plain, "total", "keras.applications"),)
    register(ModelSpec(name=_name, family="vgg", builder=build_vgg, options=dict(blocks=_blocks), paper=_PAPER,
                       references=_refs, macs=_gmacs * 1e9))
    register(ModelSpec(name=f"{_name}_bn", family="vgg", builder=build_vgg,
                       options=dict(blocks=_blocks, batch_norm=True), paper=_PAPER,
                       references=(Reference(_bn, "trainable", "torchvision"),), macs=_gmacs * 1e9))
