"""The translation parts: PatchGAN's receptive field, the GAN and cycle losses and the image pool against
hand-computed values; the U-Net generator's shape, skips and export; CycleGAN's training step."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import convforge
from convforge.heads import discriminators as d


@pytest.mark.parametrize("downsamplings, patch", [(3, 70), (1, 16), (2, 34)])
def test_patchgan_sees_the_patches_of_the_paper(downsamplings, patch):
    """4x4 kernels: going back from the logit map, r = 4 + 3 (stride-1 conv) ... each stride-2 conv doubles:
    1 -> 4 -> 7 -> 16 -> 34 -> 70 for three stride-2 layers (CycleGAN's 70x70 PatchGAN)."""
    model = d.patchgan((128, 128, 3), filters=8, downsamplings=downsamplings)
    field = convforge.receptive_fields(model)["patch_logits"]
    assert tuple(field.size) == (patch, patch)
    assert tuple(field.jump) == (2 ** downsamplings,) * 2
    assert model.output.shape[1:] == (128 // 2 ** downsamplings, 128 // 2 ** downsamplings, 1)


def test_the_gan_losses_equal_their_formulas():
    real = tf.constant([[2.0, 0.5], [1.0, -1.0]])
    fake = tf.constant([[0.0, 1.0], [-2.0, 0.5]])
    # least squares: 0.5 * (mean((real - 1)^2) + mean(fake^2)); real: 1, 0.25, 0, 4 -> 1.3125; fake: 0, 1, 4, 0.25
    assert float(d.discriminator_loss(real, fake)) == pytest.approx(0.5 * (1.3125 + 1.3125))
    assert float(d.generator_loss(fake)) == pytest.approx(np.mean([1.0, 0.0, 9.0, 0.25]))

    def softplus(x):
        return np.log1p(np.exp(x))

    r, f = real.numpy(), fake.numpy()
    assert float(d.discriminator_loss(real, fake, "non_saturating")) == pytest.approx(
        0.5 * (softplus(-r).mean() + softplus(f).mean()), rel=1e-5)
    assert float(d.generator_loss(fake, "non_saturating")) == pytest.approx(softplus(-f).mean(), rel=1e-5)
    assert float(d.cycle_loss(tf.ones((1, 2, 2, 3)), tf.zeros((1, 2, 2, 3)) + 0.25)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="least_squares"):
        d.generator_loss(fake, "wasserstein")


def test_the_image_pool_fills_then_swaps_half_the_time():
    pool = d.ImagePool(2, (1, 1, 1))
    first = pool.query(tf.reshape(tf.constant([1.0, 2.0]), (2, 1, 1, 1)),
                       draws=([0.9, 0.9], [0, 0]))
    # Filling: the pictures come back as they are and are kept.
    np.testing.assert_array_equal(first.numpy().ravel(), [1.0, 2.0])
    assert int(pool.count) == 2
    # Full: a coin below 0.5 returns the kept picture of that slot and keeps the new one there; above, the new one.
    second = pool.query(tf.reshape(tf.constant([3.0, 4.0, 5.0]), (3, 1, 1, 1)), draws=([0.1, 0.7, 0.2], [1, 0, 1]))
    np.testing.assert_array_equal(second.numpy().ravel(), [2.0, 4.0, 3.0])
    np.testing.assert_array_equal(pool.pictures.numpy().ravel(), [1.0, 5.0])
    # Inside a compiled function traced without AutoGraph (as Keras traces train steps), and a size-0 pool is a
    # pass-through.
    compiled = tf.function(lambda x, coins, slots: pool.query(x, (coins, slots)), autograph=False)
    shown = compiled(tf.reshape(tf.constant([6.0, 7.0]), (2, 1, 1, 1)), tf.constant([0.3, 0.9]), tf.constant([0, 1]))
    np.testing.assert_array_equal(shown.numpy().ravel(), [1.0, 7.0])
    np.testing.assert_array_equal(pool.pictures.numpy().ravel(), [6.0, 5.0])
    assert compiled(tf.zeros((4, 1, 1, 1)), tf.ones(4), tf.zeros(4, tf.int32)).shape == (4, 1, 1, 1)
    passthrough = d.ImagePool(0, (1, 1, 1)).query(tf.ones((2, 1, 1, 1)))
    np.testing.assert_array_equal(passthrough.numpy(), np.ones((2, 1, 1, 1)))


def test_the_unet_generator_keeps_the_size_and_exports_within_1e4(tmp_path):
    from convforge.heads.generators import unet_generator

    model = unet_generator((32, 32, 3), widths=(8, 16, 32))
    assert model.output.shape[1:] == (32, 32, 3)
    # Every encoder level but the deepest reaches the decoder through a skip.
    assert {layer.name for layer in model.layers} >= {"up0_skip", "up1_skip"}
    pictures = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    out = model(pictures).numpy()
    assert out.min() >= 0 and out.max() <= 1
    exported = convforge.export(model, tmp_path, formats=["tflite", "onnx"], inputs_for_check=pictures,
                                progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry


def test_cyclegan_trains_with_finite_losses_and_a_falling_cycle_loss(tmp_path):
    """A few steps on flat vs textured shapes (unpaired: two seeds), with the R1 penalty on: every logged loss is
    finite, the cycle loss falls, and the model translates pictures of A into pictures of B's size."""
    import keras

    from convforge import data
    from convforge.heads.generators import resnet_generator
    from convforge.train.cyclegan import LOSS_NAMES, CycleGAN

    def pictures(folder, style, seed):
        splits = data.generate_shapes(tmp_path / folder, n=20, size=32, seed=seed, objects=(1, 2), style=style)
        images_root = splits["train"][1]
        names = sorted(os.listdir(images_root))
        return np.stack([np.asarray(Image.open(os.path.join(images_root, n)).convert("RGB"), "float32") / 255.0
                         for n in names])

    flat, textured = pictures("flat", "flat", 0), pictures("textured", "textured", 1)
    keras.utils.set_random_seed(0)
    model = CycleGAN(resnet_generator((32, 32, 3), (8, 16, 16), 1, name="g_ab"),
                     resnet_generator((32, 32, 3), (8, 16, 16), 1, name="g_ba"),
                     d.patchgan((32, 32, 3), 8, 2, name="d_a"), d.patchgan((32, 32, 3), 8, 2, name="d_b"),
                     pool_size=8, r1_weight=0.01)
    model.compile(keras.optimizers.Adam(2e-3, beta_1=0.5), keras.optimizers.Adam(2e-3, beta_1=0.5))
    pairs = tf.data.Dataset.from_tensor_slices((flat, textured)).batch(4).repeat()
    history = model.fit(pairs, epochs=4, steps_per_epoch=4, verbose=0).history
    assert set(LOSS_NAMES) <= set(history)
    assert all(np.isfinite(history[name]).all() for name in LOSS_NAMES)
    assert history["cycle_loss"][-1] < history["cycle_loss"][0]
    assert min(history["r1_penalty"]) > 0
    assert model(flat[:2]).shape == (2, 32, 32, 3)


def test_patchgan_norms_keep_the_field_and_differ_only_in_their_normalization_weights():
    """instance: per-picture gamma/beta; batch adds moving statistics; none: biases on every conv instead."""
    params = {norm: d.patchgan((64, 64, 3), filters=8, downsamplings=3, norm=norm).count_params()
              for norm in d.NORMS}
    # Layers 1..3 (16, 32, 64 channels) carry the normalization: 2 * 112 gamma/beta for instance, 4 * 112 for batch;
    # without it those convs take biases (112) instead.
    assert params["batch"] - params["instance"] == 2 * 112
    assert params["instance"] - params["none"] == 2 * 112 - 112
    for norm in d.NORMS:
        model = d.patchgan((64, 64, 3), filters=8, downsamplings=3, norm=norm)
        assert tuple(convforge.receptive_fields(model)["patch_logits"].size) == (70, 70)
    with pytest.raises(ValueError, match="accepted: instance, batch, none"):
        d.patchgan((64, 64, 3), norm="layer")


def test_the_input_skip_generators_start_as_the_identity():
    """Predicting a change, the last conv starts at zero: sigmoid(0 + logit(x)) gives the picture back (to the clip
    margin) as built, for both generators; a plain generator with that conv zeroed gives 0.5 everywhere instead."""
    from convforge.heads.generators import resnet_generator, unet_generator

    pictures = np.random.default_rng(0).uniform(0.01, 0.99, (2, 16, 16, 3)).astype("float32")
    for full in (False, True):
        for model in (resnet_generator((16, 16, 3), (4, 4, 8), 1, edge_kernel=3, input_skip=True,
                                       full_resolution_skip=full),
                      unet_generator((16, 16, 3), (4, 8), input_skip=True, full_resolution_skip=full, edge_kernel=5,
                                     padding="reflect")):
            np.testing.assert_allclose(np.asarray(model(pictures)), pictures, atol=1e-5, err_msg=model.name)
    plain = resnet_generator((16, 16, 3), (4, 4, 8), 1, edge_kernel=3)
    rgb = plain.get_layer("to_rgb")
    assert np.abs(rgb.get_weights()[0]).max() > 0
    rgb.set_weights([np.zeros_like(w) for w in rgb.get_weights()])
    np.testing.assert_allclose(np.asarray(plain(pictures)), 0.5, atol=1e-6)


def test_the_unet_full_resolution_skip_feeds_the_last_conv_and_the_network_exports(tmp_path):
    """pix2pix's U-Net starts at half size; with full_resolution_skip a conv at full resolution feeds both the
    levels and the last conv (so a one-pixel edge reaches the output), every output pixel sees the whole picture,
    and the network still exports within 1e-4."""
    import keras

    from convforge import convmath
    from convforge.heads.generators import unet_generator

    keras.utils.set_random_seed(0)
    model = unet_generator((32, 32, 3), (8, 16, 32), full_resolution_skip=True, edge_kernel=5, padding="reflect")
    assert {"full_conv", "full_resolution_skip", "full_pad"} <= {layer.name for layer in model.layers}
    assert model.get_layer("down0_conv").input.shape[1:] == (32, 32, 8)  # the levels read the full-res features
    # Every output pixel sees the whole 32x32 picture (through the stride-8 level): the global context that
    # painting a region one flat colour needs.
    assert min(convmath.receptive_fields(model)["translated"].size) >= 32
    pictures = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype("float32")
    exported = convforge.export(model, tmp_path, formats=["tflite", "onnx"], inputs_for_check=pictures,
                                progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry


def test_the_r1_penalty_equals_its_definition_and_reaches_the_discriminator_s_weights():
    """R1: the mean over pictures of |d sum(logits) / d picture|^2. A 1x1 linear discriminator with kernel w scores
    sum_pixels w . x, whose slope is w at every pixel: 16 pixels give 16 |w|^2, and d penalty / d w = 32 w (the
    gradient of a gradient: what makes it a penalty the discriminator learns from). A squaring one scores
    sum x^2, slope 2x: the penalty is the mean over pictures of sum 4 x^2."""
    import keras

    w = np.array([0.5, -1.0, 2.0], "float32")
    inputs = keras.Input((4, 4, 3))
    linear = keras.Model(inputs, keras.layers.Conv2D(1, 1, use_bias=False, name="w")(inputs))
    linear.get_layer("w").kernel.assign(w.reshape(1, 1, 3, 1))
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    with tf.GradientTape() as tape:
        logits, penalty = d.r1_scores(linear, x)
    np.testing.assert_allclose(logits.numpy(), x @ w.reshape(3, 1), rtol=1e-5)
    assert float(penalty) == pytest.approx(16 * float(w @ w), rel=1e-5)
    slope = tape.gradient(penalty, linear.get_layer("w").kernel)
    np.testing.assert_allclose(slope.numpy().ravel(), 32 * w, rtol=1e-5)

    squaring = keras.Model(inputs, keras.layers.Lambda(lambda t: keras.ops.sum(t * t, -1, keepdims=True))(inputs))
    _, penalty = d.r1_scores(squaring, x)
    assert float(penalty) == pytest.approx(float(np.mean(np.sum(4 * x ** 2, axis=(1, 2, 3)))), rel=1e-5)


def test_per_domain_cycle_weights_weigh_each_round_trip_and_its_identity_term():
    """cycle_weight [wa, wb]: the generators' objective is the adversarial terms + wa (cycle_a + idt identity_a) +
    wb (cycle_b + idt identity_b), each term equal to its definition; a single weight serves both domains."""
    from convforge.heads.generators import resnet_generator
    from convforge.train.cyclegan import CycleGAN

    def cyclegan(weight, names):
        return CycleGAN(*(resnet_generator((16, 16, 3), (4, 4, 8), 0, edge_kernel=3, name=n) for n in names[:2]),
                        *(d.patchgan((16, 16, 3), 4, 1, name=n) for n in names[2:]), cycle_weight=weight,
                        identity_weight=0.5)

    model = cyclegan([1.0, 10.0], ("g1", "g2", "d1", "d2"))
    assert model.cycle_weights == (1.0, 10.0) and cyclegan(3.0, ("g3", "g4", "d3", "d4")).cycle_weights == (3.0, 3.0)
    config = model.get_config()
    assert config["cycle_weight"] == [1.0, 10.0] and CycleGAN.from_config(config).cycle_weights == (1.0, 10.0)
    a, b = np.random.default_rng(1).uniform(size=(2, 2, 16, 16, 3)).astype("float32")
    terms = {k: np.asarray(v) for k, v in model.generator_losses(a, b, training=False).items()}
    g_ab, g_ba = model.generator_ab, model.generator_ba
    mae = lambda x, y: float(np.mean(np.abs(x - np.asarray(y))))  # noqa: E731
    assert float(terms["cycle_a"]) == pytest.approx(mae(a, g_ba(g_ab(a))), rel=1e-5)
    assert float(terms["cycle_b"]) == pytest.approx(mae(b, g_ab(g_ba(b))), rel=1e-5)
    assert float(terms["identity_a"]) == pytest.approx(mae(a, g_ba(a)), rel=1e-5)
    assert float(terms["identity_b"]) == pytest.approx(mae(b, g_ab(b)), rel=1e-5)
    assert float(terms["adversarial_ab"]) == pytest.approx(
        float(np.mean((np.asarray(model.discriminator_b(g_ab(a))) - 1.0) ** 2)), rel=1e-5)
    expected = (terms["adversarial_ab"] + terms["adversarial_ba"] + 1.0 * (terms["cycle_a"] + 0.5 * terms["identity_a"])
                + 10.0 * (terms["cycle_b"] + 0.5 * terms["identity_b"]))
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-5)


def test_the_discriminators_optimizer_is_a_copy_at_the_ttur_ratio():
    """discriminator_lr_ratio: the discriminators get a fresh optimizer of the same kind at that multiple of the
    generators' rate, schedule kept (and the loss-scale wrapper of mixed_float16 kept around it)."""
    import keras

    from convforge.heads.generators import resnet_generator
    from convforge.train.cyclegan import CycleGAN
    from convforge.train.schedules import WarmupSchedule, scaled_copy

    model = CycleGAN(*(resnet_generator((16, 16, 3), (4, 4, 8), 0, edge_kernel=3, name=n) for n in ("g5", "g6")),
                     *(d.patchgan((16, 16, 3), 4, 1, name=n) for n in ("d5", "d6")), discriminator_lr_ratio=4.0)
    schedule = WarmupSchedule(1e-3, 100, kind="cosine")
    model.compile(keras.optimizers.Adam(schedule, beta_1=0.5))
    disc = model.discriminator_optimizer
    assert disc is not model.generator_optimizer and isinstance(disc, keras.optimizers.Adam) and disc.beta_1 == 0.5
    for step in (0, 50):
        assert float(disc._learning_rate(step)) == pytest.approx(4.0 * float(schedule(step)))
    wrapped = scaled_copy(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), 3.0)
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert float(wrapped.inner_optimizer.learning_rate) == pytest.approx(0.3)


def test_picture_context_shows_the_last_convs_the_picture_and_its_mean_colour_and_exports(tmp_path):
    """PictureContext: the picture's logit (clipped 1e-3 off 0 and 1) over logit(1 - 1e-3), then the picture's
    mean colour at every pixel; both generators built with it still start as the identity (input skip), convmath
    reports their output as local with a global signal, and the U-Net exports to TFLite and ONNX within 1e-4."""
    from convforge import convmath
    from convforge.heads.generators import PictureContext, resnet_generator, unet_generator

    pictures = np.random.default_rng(2).uniform(0.0, 1.0, (2, 8, 8, 3)).astype("float32")
    context = np.asarray(PictureContext()(pictures))
    clipped = np.clip(pictures, 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(context[..., :3], np.log(clipped / (1 - clipped)) / np.log(999.0), atol=1e-5)
    np.testing.assert_allclose(context[..., 3:], np.broadcast_to(pictures.mean((1, 2), keepdims=True),
                                                                 pictures.shape), atol=1e-6)

    pictures = np.random.default_rng(3).uniform(0.01, 0.99, (2, 32, 32, 3)).astype("float32")
    unet = unet_generator((32, 32, 3), (8, 16, 32), input_skip=True, full_resolution_skip=True, edge_kernel=5,
                          padding="reflect", picture_context=True)
    resnet = resnet_generator((32, 32, 3), (4, 4, 8), 1, edge_kernel=3, input_skip=True, picture_context=True)
    for model in (unet, resnet):
        assert model.get_layer("picture_context_conv").input.shape[-1] > 6
        np.testing.assert_allclose(np.asarray(model(pictures)), pictures, atol=1e-5, err_msg=model.name)
        field = convmath.receptive_fields(model)[model.layers[-1].name]
        assert field.global_context and not field.is_global, model.name
    # Trained weights are not zero: give the last conv some, so the export check compares a real change.
    rgb = unet.get_layer("to_rgb")
    rgb.set_weights([np.random.default_rng(4).normal(0, 0.1, w.shape).astype("float32") for w in rgb.get_weights()])
    exported = convforge.export(unet, tmp_path, formats=["tflite", "onnx"], inputs_for_check=pictures,
                                progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry
