"""GoogLeNet / Inception v1 (Szegedy et al., CVPR 2015); its auxiliary classifiers read inception4a and 4d."""
import keras

from convforge.backbones.common import level
from convforge.layers import conv_bn_act, inception_module, inception_v1_branches, max_pool
from convforge.layers.inception import scaled

# Table 1 of the paper: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); "pool" is a 3x3/2 max-pool.
_MODULES = (
    ("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), "pool",
    ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)), ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)), ("4e", (256, 160, 320, 32, 128, 128)), "pool",
    ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)),
)
def build_googlenet(input_shape=(224, 224, 3), branch3_kernel=3, width=1.0, name="googlenet"):
    """GoogLeNet's feature extractor; the classification top with aux_logits=True adds the auxiliary
    classifiers on inception4a and inception4d (heads.classification), for training only.

    branch3_kernel=3 follows torchvision (whose weights use 3x3 in the "5x5" branch); 5 is the paper.
    width multiplies every conv's filters (1.0: the paper's). Pools use PyTorch's ceil mode. Levels: C1 conv1 (stride 2), C2 conv3 (4), C3 3b (8), C4 4e (16), C5 5b (32).
    """
    conv_options = dict(bn_epsilon=1e-3)
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, scaled(64, width), 7, 2, 3, name="conv1", **conv_options)
    x = level(x, "C1")
    x = max_pool(x, 3, 2, ceil_mode=True, name="pool1")
    x = conv_bn_act(x, scaled(64, width), 1, name="conv2", **conv_options)
    x = conv_bn_act(x, scaled(192, width), 3, 1, 1, name="conv3", **conv_options)
    x = level(x, "C2")
    x = max_pool(x, 3, 2, ceil_mode=True, name="pool2")
    stage = 3
    for item in _MODULES:
        if item == "pool":
            x = level(x, f"C{stage}")
            stage += 1
            size = 2 if stage == 5 else 3  # the last pool is 2x2/2 in torchvision, 3x3/2 in the paper's table
            x = max_pool(x, size, 2, ceil_mode=True, name=f"pool{stage - 1}")
            continue
        tag, widths = item
        x = inception_module(x, inception_v1_branches(*widths, b3_kernel=branch3_kernel),
                             conv_options=conv_options, name=f"inception{tag}", width=width)
    x = level(x, "C5")
    return keras.Model(inputs, x, name=name)
