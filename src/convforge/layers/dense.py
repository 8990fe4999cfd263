"""DenseNet's dense block and transition (Huang et al., CVPR 2017), pre-activation BN-ReLU-conv."""
from keras import layers


def _bn_relu_conv(x, filters, kernel_size, *, bn_epsilon, name):
    """Batch-normalize, ReLU, then convolve without bias (DenseNet's composite function H)."""
    x = layers.BatchNormalization(epsilon=bn_epsilon, momentum=0.9, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv")(x)


def dense_block(x, num_layers, growth_rate=32, bn_size=4, *, bn_epsilon=1e-5, name):
    """Stack `num_layers` bottleneck layers, each concatenating `growth_rate` new channels onto its input."""
    for i in range(1, num_layers + 1):
        y = _bn_relu_conv(x, bn_size * growth_rate, 1, bn_epsilon=bn_epsilon, name=f"{name}_block{i}_0")
        y = _bn_relu_conv(y, growth_rate, 3, bn_epsilon=bn_epsilon, name=f"{name}_block{i}_1")
        x = layers.Concatenate(name=f"{name}_block{i}_concat")([x, y])
    return x


def transition(x, reduction=0.5, *, bn_epsilon=1e-5, name):
    """Compress channels by `reduction` with a 1x1 conv and halve the resolution with 2x2 average pooling."""
    x = _bn_relu_conv(x, int(x.shape[-1] * reduction), 1, bn_epsilon=bn_epsilon, name=name)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)
