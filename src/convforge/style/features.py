"""The perceptual side of style transfer: a VGG feature extractor built by convforge's own VGG builder, Gram
matrices, and the content, style and total-variation losses every method shares.

Weights load from a local file only: keras.applications' VGG16/VGG19 ImageNet file (with or without its top)
gives the classic results. Without one, the network keeps its seeded random initialization, which still
synthesizes textures (Ustyuzhaninov et al. 2016, random shallow networks as texture models) but transfers style
less faithfully; callers say so. Each layer's loss is divided by the size of its target statistics, so layers
and networks whose activations differ in scale by orders of magnitude (random weights) weigh alike.
"""
import numpy as np

from convforge.errors import ConvforgeError

# Gatys et al.: style from the first conv of every block, content from conv4_2 (their relu outputs).
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
CONTENT_LAYERS = ("block4_conv2",)
LOSS_NETWORKS = ("vgg16", "vgg19")
SAMPLE_PREFIX = "skimage:"


def load_vgg_weights(model, path, architecture):
    """Copy a local keras.applications VGG weights file into a VGG built by convforge (the same layer names)."""
    import os

    import keras

    if not os.path.isfile(str(path)):
        raise ConvforgeError(f"VGG weights file {str(path)!r} does not exist; accepted: a local keras.applications "
                             f"{architecture} weights file (.h5), e.g. {architecture}_weights_tf_dim_ordering_tf_"
                             f"kernels_notop.h5")
    build = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}[architecture]
    try:
        try:
            reference = build(include_top=False, weights=str(path), input_shape=(32, 32, 3))
        except ValueError:  # a file with the classifier layers
            reference = build(include_top=True, weights=str(path))
    except (ValueError, OSError) as error:
        raise ConvforgeError(f"VGG weights file {str(path)!r} does not fit keras.applications' {architecture} "
                             f"({str(error).splitlines()[0][:160]}); accepted: that network's weights file") from None
    ours = {layer.name: layer for layer in model.layers}
    for layer in reference.layers:
        if layer.name.startswith("block") and layer.get_weights():
            ours[f"{layer.name}_conv"].set_weights(layer.get_weights())


class FeatureExtractor:
    """VGG ReLU outputs {layer: (B, H, W, C)} of RGB images on 0..1, from a VGG built by convforge (layer names as
    keras.applications': block4_conv2, ...), weights from a local file or seeded random ones; frozen."""

    def __init__(self, layers=STYLE_LAYERS + CONTENT_LAYERS, architecture="vgg19", weights=None,
                 input_shape=(256, 256, 3), seed=0, name=None):
        import keras

        from convforge.backbones import build_backbone
        from convforge.layers.style import CaffeInput

        if architecture not in LOSS_NETWORKS:
            raise ConvforgeError(f"loss network {architecture!r} is not accepted; accepted: "
                                 f"{', '.join(LOSS_NETWORKS)}")
        keras.utils.set_random_seed(seed)
        # float32 whatever the training policy: the losses compare small differences of large activations.
        backbone = build_backbone(architecture, input_shape=tuple(input_shape), include_top=False, dtype="float32")
        if weights:
            load_vgg_weights(backbone, weights, architecture)
        names = {layer.name for layer in backbone.layers}
        missing = [name for name in layers if f"{name}_relu" not in names]
        if missing:
            raise ConvforgeError(f"{architecture} has no layer {', '.join(missing)}; accepted: blockB_convC names "
                                 f"of keras.applications' {architecture}")
        taps = keras.Model(backbone.inputs, {name: backbone.get_layer(f"{name}_relu").output for name in layers})
        pictures = keras.Input(tuple(input_shape), name="rgb")
        # Caffe's input (BGR, 0..255, mean subtracted) is made inside, from RGB on 0..1.
        self.model = keras.Model(pictures, taps(CaffeInput(name="caffe_input")(pictures)),
                                 name=name or f"{architecture}_features")
        self.model.trainable = False
        self.layers, self.architecture, self.pretrained = tuple(layers), architecture, bool(weights)

    def __call__(self, images):
        """Features of float RGB images on 0..1."""
        import tensorflow as tf

        return self.model(tf.cast(images, tf.float32), training=False)


def gram(features):
    """Gram matrices (B, C, C) of feature maps (B, H, W, C), divided by H * W."""
    import tensorflow as tf

    shape = tf.shape(features)
    flat = tf.reshape(features, [shape[0], -1, shape[3]])
    return tf.matmul(flat, flat, transpose_a=True) / tf.cast(shape[1] * shape[2], features.dtype)


def style_loss(features, target_grams, layers=STYLE_LAYERS):
    """Per-image mean over layers of the squared Gram difference, each divided by its target Gram's mean square."""
    import tensorflow as tf

    losses = []
    for name in layers:
        target = target_grams[name]
        scale = tf.reduce_mean(tf.square(target)) + 1e-12
        losses.append(tf.reduce_mean(tf.square(gram(features[name]) - target), [1, 2]) / scale)
    return tf.add_n(losses) / len(layers)


def content_loss(features, target_features, layers=CONTENT_LAYERS):
    """Per-image mean over layers of the squared feature difference, each divided by its target's mean square."""
    import tensorflow as tf

    losses = []
    for name in layers:
        target = target_features[name]
        scale = tf.reduce_mean(tf.square(target)) + 1e-12
        losses.append(tf.reduce_mean(tf.square(features[name] - target), [1, 2, 3]) / scale)
    return tf.add_n(losses) / len(layers)


def total_variation(images):
    """Per-image mean absolute difference between neighbouring pixels, on the 0..1 scale."""
    import tensorflow as tf

    dy = tf.reduce_mean(tf.abs(images[:, 1:] - images[:, :-1]), [1, 2, 3])
    dx = tf.reduce_mean(tf.abs(images[:, :, 1:] - images[:, :, :-1]), [1, 2, 3])
    return dx + dy


def read_style_image(spec, channels=3):
    """A style or content image as uint8 (H, W, 3): a file path, or "skimage:NAME" for one of scikit-image's
    sample images (astronaut, coffee, chelsea, immunohistochemistry, hubble_deep_field, ...)."""
    spec = str(spec)
    if spec.startswith(SAMPLE_PREFIX):
        import skimage.data

        name = spec[len(SAMPLE_PREFIX):]
        loader = getattr(skimage.data, name, None)
        if loader is None or name.startswith("_") or not callable(loader):
            names = [n for n in dir(skimage.data) if not n.startswith("_") and callable(getattr(skimage.data, n))]
            raise ConvforgeError(f"{spec!r} is not a scikit-image sample image; accepted: "
                                 f"skimage:{' skimage:'.join(['astronaut', 'coffee', 'chelsea', 'immunohistochemistry', 'hubble_deep_field'])} ... "
                                 f"({len(names)} in skimage.data)")
        image = np.asarray(loader())
    else:
        from convforge.preprocessing import read_image

        image = read_image(spec, channels)
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def fit_size(image, longest, shortest=32):
    """An image resized (bilinear, float32 0..255) so its longer side is `longest` pixels, and its shorter one
    at least `shortest` (the VGG's five pools need 32)."""
    import tensorflow as tf

    height, width = image.shape[:2]
    scale = max(longest / max(height, width), shortest / min(height, width))
    size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
    return tf.image.resize(tf.cast(image, tf.float32)[None], size, antialias=True)[0].numpy()
