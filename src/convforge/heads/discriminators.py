"""Discriminators and adversarial losses for image-to-image translation (CycleGAN, pix2pix).

`patchgan` is Isola et al.'s PatchGAN (CVPR 2017): 4x4 convs, stride 2 while the width doubles, then two stride-1
convs, LeakyReLU 0.2, instance normalization after all but the first; it scores every overlapping patch of the
input as real or fake (one logit per patch). Three stride-2 layers give the 70x70-pixel patches CycleGAN uses
(`convforge summary` and convmath report the receptive field of any depth). The losses take logits: the
least-squares GAN loss (Mao et al. 2017, CycleGAN's choice) or the non-saturating cross-entropy (Goodfellow et al.).
"""
import keras
from keras import layers, ops

GAN_LOSSES = ("least_squares", "non_saturating")


NORMS = ("instance", "batch", "none")


def patchgan(input_shape, filters=64, downsamplings=3, name="patchgan", norm="instance"):
    """PatchGAN: pictures (H, W, C) -> a map of real/fake logits, one per overlapping patch. norm: instance
    (CycleGAN's), batch (pix2pix's) or none; instance normalization rescales every feature map of a picture to unit
    variance, so how strong a texture is (its contrast) is lost to the layers above it."""
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is not accepted; accepted: {', '.join(NORMS)}")
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for i in range(downsamplings + 1):
        # The last of these keeps the resolution (stride 1) before the one-channel logit map, as in pix2pix.
        stride = 2 if i < downsamplings else 1
        width = filters * 2 ** min(i, 3)
        normalized = i > 0 and norm != "none"
        x = layers.Conv2D(width, 4, strides=stride, padding="same", use_bias=not normalized,
                          name=f"disc{i}_conv")(x)
        if normalized and norm == "instance":
            x = layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"disc{i}_in")(x)
        elif normalized:
            x = layers.BatchNormalization(name=f"disc{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"disc{i}_lrelu")(x)
    logits = layers.Conv2D(1, 4, padding="same", name="patch_logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


def discriminator_loss(real_logits, fake_logits, kind="least_squares"):
    """The discriminator's loss: real patches toward 1, generated ones toward 0 (mean over patches and batch),
    halved as in CycleGAN so the discriminator learns at half the generators' pace."""
    if kind == "least_squares":
        loss = ops.mean(ops.square(real_logits - 1.0)) + ops.mean(ops.square(fake_logits))
    elif kind == "non_saturating":
        loss = ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))
    else:
        raise ValueError(f"GAN loss {kind!r} is not accepted; accepted: {', '.join(GAN_LOSSES)}")
    return 0.5 * loss


def generator_loss(fake_logits, kind="least_squares"):
    """The generator's adversarial loss: its pictures' patches scored toward real (1)."""
    if kind == "least_squares":
        return ops.mean(ops.square(fake_logits - 1.0))
    if kind == "non_saturating":
        return ops.mean(ops.softplus(-fake_logits))  # -log sigmoid(logit): strong gradients while it is fooled
    raise ValueError(f"GAN loss {kind!r} is not accepted; accepted: {', '.join(GAN_LOSSES)}")


def r1_scores(discriminator, real, training=True):
    """A discriminator's logits on real pictures and its R1 penalty (Mescheder et al., ICML 2018): the mean over
    pictures of |d sum(logits) / d picture|^2, every patch's logit summed as the score of the whole picture. Call
    it inside the tape that differentiates the discriminator's loss, so the penalty's own gradient reaches its
    weights."""
    import tensorflow as tf

    real = tf.convert_to_tensor(real)
    with tf.GradientTape() as tape:
        tape.watch(real)
        logits = discriminator(real, training=training)
        total = tf.reduce_sum(tf.cast(logits, tf.float32))
    slope = tf.cast(tape.gradient(total, real), tf.float32)
    return logits, tf.reduce_mean(tf.reduce_sum(tf.square(slope), axis=tf.range(1, tf.rank(slope))))


def cycle_loss(original, reconstructed):
    """Cycle consistency: the mean absolute difference between a picture and its round trip (A -> B -> A)."""
    return ops.mean(ops.abs(ops.cast(original, "float32") - ops.cast(reconstructed, "float32")))


class ImagePool:
    """Shrivastava et al.'s history of generated pictures (CycleGAN keeps 50): the discriminator sees, for each
    new picture, either it or, half the time once the pool is full, an older one it replaces, so it does not
    forget what the generator made before. Its state lives in TensorFlow variables, so it works inside a
    compiled training step; `draws` (coin flips and slots) may be given to make a query reproducible."""

    def __init__(self, size, shape, seed=0):
        import tensorflow as tf

        self.size = int(size)
        self.pictures = tf.Variable(tf.zeros((max(self.size, 1),) + tuple(shape), tf.float32), trainable=False)
        self.count = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.generator = tf.random.Generator.from_seed(seed)

    def query(self, images, draws=None):
        """The pictures to show the discriminator for a batch of generated ones (same shape)."""
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        if self.size == 0:
            return images
        batch = tf.shape(images)[0]
        if draws is None:
            coins = self.generator.uniform([batch])
            slots = self.generator.uniform([batch], 0, self.size, dtype=tf.int32)
        else:
            coins, slots = (tf.convert_to_tensor(d) for d in draws)
        # Explicit loop and conditions, not Python ones under AutoGraph: Keras traces train steps without it.
        def one(i, out):
            image = images[i]

            def fill():
                self.pictures.scatter_nd_update([[self.count]], image[None])
                with tf.control_dependencies([self.count.assign_add(1)]):
                    return tf.identity(image)

            def swap():
                older = tf.identity(self.pictures[slots[i]])
                with tf.control_dependencies([older]):
                    update = self.pictures.scatter_nd_update([[slots[i]]], image[None])
                with tf.control_dependencies([update]):
                    return tf.identity(older)

            def keep():
                return tf.identity(image)

            shown = tf.cond(self.count < self.size, fill, lambda: tf.cond(coins[i] < 0.5, swap, keep))
            return i + 1, out.write(i, shown)

        out = tf.TensorArray(tf.float32, size=batch)
        _, out = tf.while_loop(lambda i, _: i < batch, one, (tf.constant(0), out))
        return tf.reshape(out.stack(), tf.shape(images))
