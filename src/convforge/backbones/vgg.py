"""VGG (Simonyan & Zisserman, ICLR 2015): stacks of 3x3 convs between 2x2 max-pools, with or without BN."""
import keras
from keras import layers

from convforge.backbones.common import level
from convforge.layers import conv_bn_act


def build_vgg(input_shape=(224, 224, 3), blocks=(), batch_norm=False, widths=(64, 128, 256, 512, 512),
              last_pool=True, name="vgg16"):
    """VGG's convolutional part from `blocks`, the number of 3x3 convs in each of the five blocks (filters
    `widths`, 64..512); fc1, fc2 and the classifier are heads.classification's "fc" top (fc_units sizes the
    two hidden Dense layers: 4096 in the paper, 512 the usual small-image choice).

    Levels: C1..C4 are the last conv of blocks 2..5 (strides 2..16), C5 the last pool (stride 32).
    Layer names follow keras.applications (block1_conv1 ... fc1, fc2, predictions).

    last_pool=False builds UNet's contracting path (Ronneberger et al., MICCAI 2015) from the same parts: no
    pool after the last block, and every block's last conv a level, C0 (full resolution) to C4 (stride 16).
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for b, (convs, filters) in enumerate(zip(blocks, widths), start=1):
        for c in range(1, convs + 1):
            # torchvision's vgg*_bn keep the conv bias in front of BN; their parameter counts include it.
            x = conv_bn_act(x, filters, 3, 1, "same", use_bias=True, norm=batch_norm,
                            name=f"block{b}_conv{c}")
        if b > 1 or not last_pool:
            x = level(x, f"C{b - 1}")
        if b < len(blocks) or last_pool:
            x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    if last_pool:
        x = level(x, "C5")
    return keras.Model(inputs, x, name=name)
