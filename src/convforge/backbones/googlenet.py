"""GoogLeNet / Inception v1 (Szegedy et al., CVPR 2015) with its two auxiliary classifiers."""
import keras
from keras import layers

from convforge.backbones.common import classifier, gap_top, level
from convforge.layers import conv_bn_act, inception_module, inception_v1_branches, max_pool
from convforge.layers.inception import scaled

# Table 1 of the paper: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); "pool" is a 3x3/2 max-pool.
_MODULES = (
    ("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), "pool",
    ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)), ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)), ("4e", (256, 160, 320, 32, 128, 128)), "pool",
    ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)),
)
_AUX_AFTER = ("4a", "4d")


def _aux_classifier(x, num_classes, activation, conv_options, name):
    """Auxiliary head: pool to 4x4, 1x1 conv 128, FC 1024, dropout 0.7, classifier (section 5 of the paper)."""
    x = layers.AdaptiveAveragePooling2D((4, 4), name=f"{name}_pool")(x)
    x = conv_bn_act(x, 128, 1, name=f"{name}_conv", **conv_options)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc1")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return classifier(x, num_classes, activation, name=f"{name}_predictions")


def build_googlenet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, pooling=None,
                    classifier_activation="softmax", aux_logits=False, branch3_kernel=3, dropout=0.2,
                    width=1.0, name="googlenet"):
    """GoogLeNet; with aux_logits the model returns [main, aux1, aux2] (the aux heads are for training only).

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
    aux, stage = [], 3
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
        if aux_logits and include_top and tag in _AUX_AFTER:
            aux.append(_aux_classifier(x, num_classes, classifier_activation, conv_options,
                                       name=f"aux{len(aux) + 1}"))
    x = level(x, "C5")
    outputs = gap_top(x, include_top=include_top, pooling=pooling, num_classes=num_classes,
                      classifier_activation=classifier_activation, dropout=dropout)
    return keras.Model(inputs, [outputs, *aux] if aux else outputs, name=name)


def strip_aux(model):
    """Return the inference model of a GoogLeNet built with aux_logits: the main output only, same weights."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.outputs[0], name=model.name)
