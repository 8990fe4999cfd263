"""AlexNet (Krizhevsky et al., NeurIPS 2012): the torchvision layout and the paper's, with LRN and groups."""
import keras
from keras import layers

from convforge.backbones.common import classifier, level, pool_features
from convforge.layers import LocalResponseNormalization, conv_bn_act, max_pool
from convforge.registry import ModelSpec, Reference, register


def build_alexnet(input_shape=(224, 224, 3), num_classes=1000, include_top=True, pooling=None,
                  classifier_activation="softmax", convs=(), adaptive_pool=None, dropout=0.5, fc_units=4096,
                  name="alexnet"):
    """AlexNet from a table of conv rows (filters, kernel, stride, padding, groups, lrn, pool_after).

    fc_units sizes the two hidden Dense layers (4096 in the paper).

    Levels: C2 after conv1 (stride 4), C3 after conv2 (8), C4 after conv5 (16), C5 after the last pool (32).
    `adaptive_pool` (torchvision) pools the last map to a fixed grid so the classifier fits any input size;
    Keras' adaptive pooling cannot upsample inside a traced graph, so inputs must keep that map >= 1x1 before
    pooling to 6x6 (95 px and up).
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    stride_levels = {0: "C2", 1: "C3", len(convs) - 1: "C4"}
    for i, (filters, kernel, stride, padding, groups, lrn, pool_after) in enumerate(convs):
        x = conv_bn_act(x, filters, kernel, stride, padding, groups=groups, use_bias=True, norm=False,
                        name=f"conv{i + 1}")
        if lrn:
            x = LocalResponseNormalization(name=f"conv{i + 1}_lrn")(x)
        x = level(x, stride_levels[i]) if i in stride_levels else x
        if pool_after:
            x = max_pool(x, 3, 2, name=f"pool{i + 1}")
    x = level(x, "C5")
    if not include_top:
        return keras.Model(inputs, pool_features(x, pooling), name=name)
    if adaptive_pool:
        x = layers.AdaptiveAveragePooling2D(adaptive_pool, name="adaptive_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        x = layers.Dropout(dropout, name=f"drop{i}")(x)
        x = layers.Dense(fc_units, activation="relu", name=f"fc{i}")(x)
    return keras.Model(inputs, classifier(x, num_classes, classifier_activation), name=name)


# filters, kernel, stride, padding, groups, lrn, pool_after
_TORCHVISION = ((64, 11, 4, 2, 1, False, True), (192, 5, 1, 2, 1, False, True), (384, 3, 1, 1, 1, False, False),
                (256, 3, 1, 1, 1, False, False), (256, 3, 1, 1, 1, False, True))
# The paper's two-GPU split survives as groups=2 on conv2, conv4 and conv5 (they saw only their own GPU's half).
_PAPER = ((96, 11, 4, 0, 1, True, True), (256, 5, 1, 2, 2, True, True), (384, 3, 1, 1, 1, False, False),
          (384, 3, 1, 1, 2, False, False), (256, 3, 1, 1, 2, False, True))
_PAPER_REF = "Krizhevsky, Sutskever & Hinton, ImageNet classification with deep CNNs, NeurIPS 2012"

register(ModelSpec(
    name="alexnet", family="alexnet", builder=build_alexnet,
    options=dict(convs=_TORCHVISION, adaptive_pool=(6, 6)), paper=_PAPER_REF, min_input_size=95,
    references=(Reference(61_100_840, "total", "torchvision"),), macs=0.714e9,
    notes="torchvision's single-GPU variant (64/192/384/256/256 filters, no LRN)",
))
register(ModelSpec(
    name="alexnet_original", family="alexnet", builder=build_alexnet,
    options=dict(convs=_PAPER, adaptive_pool=None), paper=_PAPER_REF, default_input_shape=(227, 227, 3),
    min_input_size=67,
    references=(Reference(60_965_224, "total", "Caffe bvlc_alexnet", input_shape=(227, 227, 3)),),
    notes="the paper's layout: 96/256/384/384/256 filters, LRN after conv1-2, groups=2 for the two-GPU split",
))
