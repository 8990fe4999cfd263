"""DenseNet (Huang et al., CVPR 2017): dense blocks joined by compressing transitions."""
import keras
from keras import layers

from convforge.backbones.common import level
from convforge.layers import conv_bn_act, dense_block, max_pool, transition


def build_densenet(input_shape=(224, 224, 3), blocks=(6, 12, 24, 16), growth_rate=32, init_features=64,
                   bn_size=4, reduction=0.5, bn_epsilon=1e-5, name="densenet121"):
    """DenseNet-BC: a 7x7/2 stem, four dense blocks of `blocks` layers, transitions halving channels.

    Levels: C1 stem (stride 2), C2..C4 the outputs of dense blocks 1-3, C5 the final BN-ReLU (stride 32).
    torchvision and keras.applications share this layout (keras uses bn_epsilon=1.001e-5).
    """
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, init_features, 7, 2, 3, bn_epsilon=bn_epsilon, name="conv1")
    x = level(x, "C1")
    x = max_pool(x, 3, 2, padding=1, name="pool1")
    for i, num_layers in enumerate(blocks):
        x = dense_block(x, num_layers, growth_rate, bn_size, bn_epsilon=bn_epsilon, name=f"conv{i + 2}")
        if i < len(blocks) - 1:
            x = level(x, f"C{i + 2}")
            x = transition(x, reduction, bn_epsilon=bn_epsilon, name=f"pool{i + 2}")
    x = layers.BatchNormalization(epsilon=bn_epsilon, momentum=0.9, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = level(x, "C5")
    return keras.Model(inputs, x, name=name)
