"""Style transfer: the losses against numpy, the VGG features against keras.applications with the same weights,
Gatys' optimization, the fast network trained by its recipe, exported and verified, and `convforge stylize`."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import convforge
from convforge.recipes import load_recipe
from convforge.style import features
from runchecks import check_finished_run, history_rows
from smallmodels import tiny

ROOT = Path(__file__).resolve().parents[1]
FAST = ROOT / "recipes" / "style" / "fast_vgg16_shapes.yaml"
ADAIN = ROOT / "recipes" / "style" / "adain_vgg19_shapes.yaml"


def test_gram_and_the_losses_equal_their_definitions():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    flat = maps.reshape(2, 20, 3)
    expected = np.einsum("bnc,bnd->bcd", flat, flat) / 20
    np.testing.assert_allclose(features.gram(tf.constant(maps)).numpy(), expected, rtol=1e-5)
    other = rng.normal(size=maps.shape).astype("float32")
    target = {"block1_conv1": features.gram(tf.constant(other))}
    style = features.style_loss({"block1_conv1": tf.constant(maps)}, target, ("block1_conv1",)).numpy()
    reference = ((expected - target["block1_conv1"].numpy()) ** 2).mean((1, 2)) / (target["block1_conv1"].numpy() ** 2).mean()
    np.testing.assert_allclose(style, reference, rtol=1e-5)
    content = features.content_loss({"c": tf.constant(maps)}, {"c": tf.constant(other)}, ("c",)).numpy()
    np.testing.assert_allclose(content, ((maps - other) ** 2).mean((1, 2, 3)) / (other ** 2).mean(), rtol=1e-5)
    image = rng.uniform(size=(1, 6, 7, 3)).astype("float32")
    tv = np.abs(np.diff(image, axis=1)).mean() + np.abs(np.diff(image, axis=2)).mean()
    assert features.total_variation(tf.constant(image)).numpy()[0] == pytest.approx(tv, rel=1e-5)


def test_vgg_features_equal_keras_applications_with_the_same_weights_file(tmp_path):
    """Our VGG-16, loaded from a keras.applications weights file, computes keras.applications' activations on
    Caffe's input (preprocess_input) from RGB pictures on 0..1."""
    keras.utils.set_random_seed(3)
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16.weights.h5"
    reference.save_weights(path)
    extractor = features.FeatureExtractor(("block1_conv2", "block3_conv3"), "vgg16", str(path), (32, 32, 3))
    pictures = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    ours = extractor(pictures)
    taps = keras.Model(reference.input, [reference.get_layer(n).output for n in ("block1_conv2", "block3_conv3")])
    theirs = taps(keras.applications.vgg16.preprocess_input(pictures * 255.0))
    for name, expected in zip(("block1_conv2", "block3_conv3"), theirs):
        np.testing.assert_allclose(ours[name].numpy(), np.asarray(expected), rtol=1e-4, atol=1e-3)
    with pytest.raises(convforge.ConvforgeError, match="does not exist"):
        features.FeatureExtractor(("block1_conv2",), "vgg16", str(tmp_path / "missing.h5"), (32, 32, 3))


def test_gatys_lowers_the_style_loss_and_writes_at_the_content_size():
    from convforge.style.gatys import gatys

    content = features.read_style_image("skimage:chelsea")[::8, ::8]
    style = features.read_style_image("skimage:immunohistochemistry")[::8, ::8]
    _, before = gatys(content, style, steps=1, size=32)
    result, after = gatys(content, style, steps=12, size=32)
    assert result.shape == content.shape and result.dtype == np.uint8
    assert after["style_loss"] < 0.5 * before["style_loss"] and after["loss"] < before["loss"]
    assert not after["pretrained"]
    with pytest.raises(convforge.ConvforgeError, match="optimizer"):
        gatys(content, style, steps=1, size=32, optimizer="sgd")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """The fast style recipe on a few tiny pictures with a narrow generator."""
    folder = tmp_path_factory.mktemp("style")
    sets = [*tiny(FAST, folder / "shapes", epochs=3, steps=4), "head.widths=[8,8,16]", "head.residual_blocks=1",
            "head.style_size=48", "data.batch_size=4"]
    return convforge.train(load_recipe(FAST, overrides=sets), run_dir=folder / "run", printer=lambda *_: None,
                           verbose=0)


def test_the_fast_style_recipe_trains_and_exports_within_1e4(fast_run, tmp_path):
    run = Path(fast_run["run_dir"])
    check_finished_run(run, load_recipe(run / "recipe.yaml"), epochs=3)  # test_train.py leaves the recipe here
    losses = [float(r["loss"]) for r in history_rows(run)]
    assert losses[-1] < losses[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_perceptual_loss"] < metrics["val_unstyled_perceptual_loss"]
    assert metrics["val_unstyled_content_loss"] == pytest.approx(0.0, abs=1e-6)
    model = convforge.tasks.load_model(run / "model.keras")
    pictures = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    exported = convforge.export(model, tmp_path / "export", formats=["tflite", "onnx"], inputs_for_check=pictures,
                                progress=None, latency_runs=0)
    for entry in exported["card"]["artifacts"]:
        assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry


def test_stylize_writes_the_result_at_the_content_size_and_a_panel(fast_run, tmp_path):
    from PIL import Image

    from convforge.cli import main as cli_main

    content = tmp_path / "content.png"
    Image.fromarray(features.read_style_image("skimage:coffee")[::10, ::10]).save(content)  # 40 x 60
    assert cli_main(["stylize", "--content", str(content), "--method", "fast", "--model", fast_run["run_dir"],
                     "--out", str(tmp_path / "fast.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "fast.png")).shape == (40, 60, 3)
    panel = np.asarray(Image.open(tmp_path / "fast_panel.png"))
    assert panel.shape[0] == 40 and panel.shape[1] > 2 * 60  # content, the run's style picture, the result
    assert cli_main(["stylize", "--content", str(content), "--style", "skimage:immunohistochemistry", "--steps",
                     "2", "--size", "32", "--out", str(tmp_path / "gatys.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "gatys.png")).shape == (40, 60, 3)
    # Bad input: one line, exit 2, nothing written.
    assert cli_main(["stylize", "--content", str(content), "--out", str(tmp_path / "none.png")]) == 2
    assert cli_main(["stylize", "--content", "skimage:no_such", "--style", "skimage:coffee",
                     "--out", str(tmp_path / "none.png")]) == 2
    assert not (tmp_path / "none.png").exists()


def test_adain_gives_the_content_the_style_channel_statistics():
    from convforge.layers.style import AdaptiveInstanceNormalization

    rng = np.random.default_rng(0)
    content = rng.normal(2.0, 3.0, (2, 6, 5, 4)).astype("float32")
    style = rng.normal(-1.0, 0.5, (2, 7, 3, 4)).astype("float32") * np.arange(1, 5, dtype="float32")
    mixed = np.asarray(AdaptiveInstanceNormalization()([content, style]))
    np.testing.assert_allclose(mixed.mean((1, 2)), style.mean((1, 2)), atol=1e-4)
    np.testing.assert_allclose(mixed.std((1, 2)), style.std((1, 2)), rtol=1e-3)
    # The content's pattern survives: per channel, an increasing affine map of it.
    assert all(np.corrcoef(mixed[0, ..., c].ravel(), content[0, ..., c].ravel())[0, 1] > 0.999 for c in range(4))
    half = np.asarray(AdaptiveInstanceNormalization(alpha=0.5)([content, style]))
    np.testing.assert_allclose(half, 0.5 * mixed + 0.5 * content, atol=1e-4)


def test_the_adain_recipe_trains_and_stylizes_with_any_style(tmp_path):
    from PIL import Image

    from convforge.cli import main as cli_main

    sets = [*tiny(ADAIN, tmp_path / "shapes", epochs=2, steps=3), "head.decoder_width=0.1",
            "head.crops_per_style=2", "data.batch_size=4"]
    recipe = load_recipe(ADAIN, overrides=sets)
    result = convforge.train(recipe, run_dir=tmp_path / "run", printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    check_finished_run(run, recipe, epochs=2)  # test_train.py leaves this recipe to this test
    losses = [float(r["loss"]) for r in history_rows(run)]
    assert losses[-1] < losses[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_style_loss"] < metrics["val_unstyled_style_loss"]
    model = convforge.tasks.load_model(run / "model.keras")
    assert set(model.input) == {"content", "style"}
    content = tmp_path / "content.png"
    Image.fromarray(features.read_style_image("skimage:coffee")[::10, ::10]).save(content)  # 40 x 60
    assert cli_main(["stylize", "--content", str(content), "--style", "skimage:hubble_deep_field", "--method",
                     "adain", "--model", str(run), "--out", str(tmp_path / "adain.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "adain.png")).shape == (40, 60, 3)
    assert cli_main(["stylize", "--content", str(content), "--method", "adain", "--model", str(run),
                     "--out", str(tmp_path / "none.png")]) == 2


@pytest.mark.parametrize("change, field", [("data.normalize=imagenet", "data.normalize"),
                                           ("model.architecture=resnet18", "model.architecture"),
                                           ("head.widths=[8,0,8]", "head.widths")])
def test_a_style_recipe_names_what_it_cannot_take(change, field):
    with pytest.raises(convforge.RecipeError, match=field.replace(".", r"\.")):
        load_recipe(FAST, overrides=[change])


def test_the_fast_network_trains_under_mixed_bfloat16_and_its_int8_export_runs(fast_run, tmp_path):
    """The bf16 CPU path forced: the generator computes in bfloat16 while the loss network stays float32; and the
    trained generator's full-int8 TFLite (the path an int8 phone takes) stays close to Keras."""
    import keras

    sets = [*tiny(FAST, tmp_path / "shapes", epochs=2, steps=3), "head.widths=[8,8,16]", "head.residual_blocks=1",
            "head.style_size=48", "data.batch_size=4", "train.precision=mixed_bfloat16"]
    result = convforge.train(load_recipe(FAST, overrides=sets), run_dir=tmp_path / "run", printer=lambda *_: None,
                             verbose=0)
    losses = [float(r["loss"]) for r in history_rows(result["run_dir"])]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert json.loads((Path(result["run_dir"]) / "metrics.json").read_text())["precision"] == "mixed_bfloat16"
    keras.config.set_dtype_policy("float32")
    model = convforge.tasks.load_model(Path(fast_run["run_dir"]) / "model.keras")
    pictures = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
    exported = convforge.export(model, tmp_path / "int8", formats=["tflite_int8"], representative=pictures,
                                inputs_for_check=pictures[:2], progress=None, latency_runs=0)
    entry = exported["card"]["artifacts"][0]
    assert entry["format"] == "tflite_int8" and entry["check"]["max_abs_diff"] < 0.25
