"""Layers of style transfer models: the input conversion keras.applications' VGG weights expect, and adaptive
instance normalization (Huang & Belongie, ICCV 2017), which gives content features the style's channel
statistics."""
import keras
from keras import layers, ops

# keras.applications' VGG weights were trained on Caffe's input: BGR, 0..255, the ImageNet mean subtracted.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="convforge")
class CaffeInput(layers.Layer):
    """RGB pictures on 0..1 -> Caffe's VGG input (BGR on 0..255 minus the ImageNet mean)."""

    def call(self, x):
        x = ops.flip(ops.cast(x, self.compute_dtype) * 255.0, axis=-1)
        return x - ops.convert_to_tensor(CAFFE_MEAN_BGR, self.compute_dtype)


def channel_moments(x, epsilon=1e-5):
    """Per-image, per-channel mean and standard deviation over height and width (B, 1, 1, C) each."""
    mean, variance = ops.moments(x, axes=[1, 2], keepdims=True)
    return mean, ops.sqrt(variance + epsilon)


@keras.saving.register_keras_serializable(package="convforge")
class AdaptiveInstanceNormalization(layers.Layer):
    """AdaIN(content, style) = std(style) * (content - mean(content)) / std(content) + mean(style), per image and
    channel; `alpha` < 1 blends the result back toward the content features."""

    def __init__(self, epsilon=1e-5, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.epsilon, self.alpha = epsilon, alpha

    def call(self, inputs):
        content, style = inputs
        content_mean, content_std = channel_moments(content, self.epsilon)
        style_mean, style_std = channel_moments(style, self.epsilon)
        mixed = style_std * (content - content_mean) / content_std + style_mean
        return self.alpha * mixed + (1.0 - self.alpha) * content

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "alpha": self.alpha}
