"""Arbitrary style transfer with adaptive instance normalization (Huang & Belongie, ICCV 2017): a frozen VGG
encoder to relu4_1 reads the content and the style picture, AdaIN gives the content features the style's channel
means and deviations, and a trained decoder (the encoder mirrored, nearest upsampling) paints the result. One
model serves every style: the style is its second input.

Loss (per picture): the decoded picture's relu4_1 features against the AdaIN target, plus the distance of its
relu1_1..relu4_1 channel means and deviations from the style's, each divided by the size of its target.
"""
from convforge.style.features import FeatureExtractor

ENCODER_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1")  # relu1_1 .. relu4_1
# The decoder mirrors VGG-19 from relu4_1 down: (width of relu4_1's block below, convs) per upsampling stage.
DECODER = ((256, 4), (128, 2), (64, 2))


def build_adain(input_shape, architecture="vgg19", vgg_weights=None, width=1.0, alpha=1.0, seed=0,
                name="adain"):
    """A Keras model {"content", "style"} (RGB on 0..1) -> the stylized picture on 0..1, with the VGG encoder
    (frozen, named "encoder": its outputs are the loss's features) and a decoder `width` times the paper's."""
    import keras
    from keras import layers

    from convforge.layers.style import AdaptiveInstanceNormalization

    encoder = FeatureExtractor(ENCODER_LAYERS, architecture, vgg_weights, input_shape, seed, name="encoder").model
    content = keras.Input(tuple(input_shape), name="content")
    style = keras.Input(tuple(input_shape), name="style")
    target = AdaptiveInstanceNormalization(alpha=alpha, name="adain")(
        [encoder(content)["block4_conv1"], encoder(style)["block4_conv1"]])
    x = target
    for stage, (filters, convs) in enumerate(DECODER):
        filters = max(4, int(round(filters * width)))
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"decode{stage}_reduce")(x)
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"decode{stage}_up")(x)
        for conv in range(1, convs):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"decode{stage}_conv{conv}")(x)
    x = layers.Conv2D(3, 3, padding="same", name="to_rgb", dtype="float32")(x)
    stylized = layers.Activation("sigmoid", name="stylized", dtype="float32")(x)
    return keras.Model({"content": content, "style": style}, stylized, name=name)


def adain_losses(model, content, style, stylized, content_weight=1.0, style_weight=10.0):
    """Per-picture {"content_loss", "style_loss", "perceptual_loss"} of stylized pictures, with the model's own
    encoder and AdaIN layer (so the targets are the ones the model decoded from)."""
    import tensorflow as tf

    from convforge.layers.style import channel_moments

    encoder, adain = model.get_layer("encoder"), model.get_layer("adain")
    style_features = encoder(style, training=False)
    target = adain([encoder(content, training=False)["block4_conv1"], style_features["block4_conv1"]])
    found = encoder(stylized, training=False)
    scale = tf.reduce_mean(tf.square(target)) + 1e-12
    content_loss = tf.reduce_mean(tf.square(found["block4_conv1"] - target), [1, 2, 3]) / scale
    style_terms = []
    for name in ENCODER_LAYERS:
        mean, std = channel_moments(found[name])
        style_mean, style_std = channel_moments(style_features[name])
        size = tf.reduce_mean(tf.square(style_mean)) + tf.reduce_mean(tf.square(style_std)) + 1e-12
        style_terms.append((tf.reduce_mean(tf.square(mean - style_mean), [1, 2, 3]) +
                            tf.reduce_mean(tf.square(std - style_std), [1, 2, 3])) / size)
    parts = {"content_loss": content_weight * content_loss,
             "style_loss": style_weight * tf.add_n(style_terms) / len(style_terms)}
    parts["perceptual_loss"] = parts["content_loss"] + parts["style_loss"]
    return parts
