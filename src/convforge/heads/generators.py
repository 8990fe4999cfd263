"""Image-to-image generators: networks whose output is a picture the size of their input.

`resnet_generator` is Johnson, Alahi & Fei-Fei's image transformation network (ECCV 2016; CycleGAN's generator is
the same design): a 9x9 conv, two stride-2 convs, residual blocks at a quarter of the resolution, two x2
upsamplings back and a 9x9 conv to RGB, instance normalization throughout. Upsampling is nearest-neighbour then a
conv by default (Odena et al. 2016: no checkerboard artefacts from overlapping transposed kernels), or transposed
convs as in the paper. `unet_generator` is pix2pix's U-Net (Isola et al., CVPR 2017): stride-2 4x4 convs down,
LeakyReLU 0.2, then nearest upsampling + conv back up with each level's encoder features concatenated (the skips
carry the picture's edges across). The output is an image on 0..1 (a sigmoid).
"""
import keras
import numpy as np
from keras import layers, ops

UPSAMPLING = ("nearest", "transpose")


PADDINGS = ("zeros", "reflect")


def _conv_norm(x, filters, kernel, stride, name, activation="relu", padding="zeros"):
    """Conv, instance normalization (GroupNormalization with one group per channel), activation; padding reflect
    (stride-1 convs): the picture mirrored at its border instead of zeros, as CycleGAN pads, so the border is
    not a feature the network learns to paint frames around."""
    if padding == "reflect" and stride == 1 and kernel > 1:
        x = ReflectionPadding2D(kernel // 2, name=f"{name}_pad")(x)
        x = layers.Conv2D(filters, kernel, padding="valid", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"{name}_in")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x) if activation else x


def resnet_generator(input_shape, widths=(32, 64, 128), residual_blocks=5, upsampling="nearest",
                     name="resnet_generator", edge_kernel=9, input_skip=False, padding="zeros",
                     full_resolution_skip=False, picture_context=False):
    """Johnson et al.'s transformation network: images on the input's scale -> images on 0..1, same size
    (height and width divisible by 4); edge_kernel: the first and last convs' size (Johnson 9, CycleGAN 7);
    input_skip: the network predicts a change to the input picture (on 0..1) instead of a new picture;
    padding: zeros, or reflect (CycleGAN's) for the stride-1 convs; full_resolution_skip: the last conv also reads
    the first block's full-resolution features (a U-Net-like skip), so detail finer than the quarter-resolution
    blocks (a texture to take away, an edge to keep) reaches the output; picture_context: see _picture_context."""
    _check(padding, upsampling)
    first, middle, deep = widths
    inputs = keras.Input(tuple(input_shape), name="image")
    x = full = _conv_norm(inputs, first, edge_kernel, 1, "down0", padding=padding)
    x = _conv_norm(x, middle, 3, 2, "down1")
    x = _conv_norm(x, deep, 3, 2, "down2")
    for i in range(residual_blocks):
        y = _conv_norm(x, deep, 3, 1, f"res{i}_a", padding=padding)
        y = _conv_norm(y, deep, 3, 1, f"res{i}_b", activation=None, padding=padding)
        x = layers.Add(name=f"res{i}_add")([x, y])
    for i, filters in enumerate((middle, first)):
        if upsampling == "nearest":
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{i}_resize")(x)
            x = _conv_norm(x, filters, 3, 1, f"up{i}", padding=padding)
        else:
            x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False,
                                       name=f"up{i}_conv")(x)
            x = layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"up{i}_in")(x)
            x = layers.Activation("relu", name=f"up{i}_relu")(x)
    if full_resolution_skip:
        x = layers.Concatenate(name="full_resolution_skip")([x, full])
    if picture_context:
        x = _picture_context(x, inputs, first, padding)
    outputs = _to_picture(x, inputs, edge_kernel, padding, input_skip, "stylized")
    return keras.Model(inputs, outputs, name=name)


def _check(padding, upsampling="nearest"):
    """Refuse a padding or upsampling the generators do not build, naming the accepted ones."""
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling {upsampling!r} is not accepted; accepted: {', '.join(UPSAMPLING)}")
    if padding not in PADDINGS:
        raise ValueError(f"padding {padding!r} is not accepted; accepted: {', '.join(PADDINGS)}")


def _picture_context(x, inputs, width, padding):
    """The features, the picture itself and its mean colour, mixed by a 3x3 conv + ReLU before the last conv.
    Instance normalization takes every feature map's mean and contrast away from the first layer on, so without
    this the network cannot see how bright a pixel is or what colour the whole picture averages: what repainting a
    textured background in its mean colour, a stripe's strength taken away, needs."""
    context = PictureContext(name="picture_context")(inputs)
    x = layers.Concatenate(name="picture_context_concat")([x, context])
    if padding == "reflect":
        x = ReflectionPadding2D(1, name="picture_context_pad")(x)
    x = layers.Conv2D(width, 3, padding="valid" if padding == "reflect" else "same", name="picture_context_conv")(x)
    return layers.Activation("relu", name="picture_context_relu")(x)


@keras.saving.register_keras_serializable(package="convforge")
class PictureContext(layers.Layer):
    """A picture on 0..1 -> its logit scaled to -1..1 and its mean colour at every pixel (6 channels), neither
    normalized per picture."""

    # convmath: each output pixel reads its own input pixel, plus a signal from the whole picture (its mean).
    receptive_field_global_context = True

    def __init__(self, margin=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.logit = InputLogit(margin, name="logit")

    def call(self, images):
        bound = float(np.log((1.0 - self.logit.margin) / self.logit.margin))
        images = ops.cast(images, self.compute_dtype)
        logit = ops.cast(self.logit(images), self.compute_dtype) / bound
        # Added to zeros of the picture's shape: a broadcast that SavedModel, TFLite and ONNX all hold.
        mean = ops.mean(images, axis=(1, 2), keepdims=True) + ops.zeros_like(images)
        return ops.concatenate([logit, mean], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * input_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "margin": self.logit.margin}


def _to_picture(x, inputs, kernel, padding, input_skip, name):
    """Features -> a picture on 0..1: a conv to RGB, plus the input's logit when the network predicts a change."""
    # The picture is computed in float32 under a mixed policy, so its 0..1 values keep their precision.
    if padding == "reflect" and kernel > 1:
        x = ReflectionPadding2D(kernel // 2, name="to_rgb_pad")(x)
    # Predicting a change, the last conv starts at zero so the network starts as exactly the identity.
    x = layers.Conv2D(3, kernel, padding="valid" if padding == "reflect" and kernel > 1 else "same",
                      kernel_initializer="zeros" if input_skip else "glorot_uniform", name="to_rgb",
                      dtype="float32")(x)
    if input_skip:
        x = layers.Add(name="input_skip", dtype="float32")([x, InputLogit(name="input_logit")(inputs)])
    return layers.Activation("sigmoid", name=name, dtype="float32")(x)


@keras.saving.register_keras_serializable(package="convforge")
class InputLogit(layers.Layer):
    """The logit of a picture on 0..1 (clipped off 0 and 1), so that sigmoid(logit + change) starts as the picture
    itself: a generator with this skip learns what to change, and begins as the identity (many translations,
    like removing texture, leave most of a picture as it is)."""

    pixelwise = True  # convmath: each output pixel reads its own input pixel

    def __init__(self, margin=1e-3, **kwargs):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})
        self.margin = float(margin)

    def call(self, images):
        x = ops.clip(ops.cast(images, "float32"), self.margin, 1.0 - self.margin)
        return ops.log(x) - ops.log(1.0 - x)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def unet_generator(input_shape, widths=(32, 64, 128, 256), name="unet_generator", input_skip=False,
                   full_resolution_skip=False, edge_kernel=7, padding="zeros", picture_context=False):
    """pix2pix's U-Net generator: images -> images on 0..1, same size (height and width divisible by
    2 ** len(widths)); full_resolution_skip: a stride-1 conv of edge_kernel (padding zeros or reflect) at the full
    resolution first, whose features the last conv reads again (pix2pix's first level is already at half size,
    so a one-pixel edge has no path to the output); input_skip: predict a change to the input (starts as the
    identity), as resnet_generator's; picture_context: see _picture_context."""
    _check(padding)
    inputs = keras.Input(tuple(input_shape), name="image")
    x, skips = inputs, []
    if full_resolution_skip:
        x = full = _conv_norm(inputs, widths[0], edge_kernel, 1, "full", activation=None, padding=padding)
        x = layers.LeakyReLU(0.2, name="full_lrelu")(x)
    for i, filters in enumerate(widths):
        first = i == 0 and not full_resolution_skip  # pix2pix leaves the first level (on the picture) unnormalized
        x = layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=first, name=f"down{i}_conv")(x)
        if not first:
            x = layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"down{i}_in")(x)
        x = layers.LeakyReLU(0.2, name=f"down{i}_lrelu")(x)
        skips.append(x)
    for i, filters in reversed(list(enumerate(widths[:-1]))):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{i}_resize")(x)
        x = _conv_norm(x, filters, 3, 1, f"up{i}", padding=padding)
        x = layers.Concatenate(name=f"up{i}_skip")([x, skips[i]])
    x = layers.UpSampling2D(2, interpolation="nearest", name="out_resize")(x)
    if full_resolution_skip:
        x = _conv_norm(x, widths[0], 3, 1, "out", padding=padding)
        x = layers.Concatenate(name="full_resolution_skip")([x, full])
    if picture_context:
        x = _picture_context(x, inputs, widths[0], padding)
    return keras.Model(inputs, _to_picture(x, inputs, 3, padding, input_skip, "translated"), name=name)


@keras.saving.register_keras_serializable(package="convforge")
class ReflectionPadding2D(layers.ZeroPadding2D):
    """ZeroPadding2D's geometry (so receptive fields and shapes follow it) with the border mirrored instead of
    zero (PyTorch's ReflectionPad2d; TFLite MIRROR_PAD, ONNX Pad mode reflect)."""

    def call(self, inputs):
        (top, bottom), (left, right) = self.padding
        return ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]], mode="reflect")
