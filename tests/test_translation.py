"""task: translation (CycleGAN) end to end: the recipe's two domains, training with every loss logged and a sample
grid per epoch, evaluation against paired ground truth, both generators exported and verified, stylize."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

import convforge
from convforge.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "translation" / "cyclegan_shapes.yaml"


def _small(folder, *extra):
    """--set overrides shrinking the shipped recipe to a few steps on 32-pixel pictures and narrow networks."""
    return ["model.input_shape=[32,32,3]", "train.epochs=3", "train.steps_per_epoch=4", "data.batch_size=4",
            *[f"data.{part}.{k}={v}" for part, path in (("domain_a", "a"), ("domain_b", "b"))
              for k, v in (("path", folder / path), ("n", 48), ("size", 32))],
            f"data.paired_val.path={folder / 'pa'}",  # the rest follows domain_a's (the val rule)
            "head.generator.widths=[8,8,16]", "head.discriminator.filters=8",
            "head.discriminator.downsamplings=2", "head.pool_size=8", *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The shipped recipe, shrunk, trained once for the tests of this module."""
    folder = tmp_path_factory.mktemp("translation")
    recipe = load_recipe(RECIPE, overrides=_small(folder, "train.optimizer.learning_rate=0.002"))
    return convforge.train(recipe, run_dir=folder / "run", printer=lambda *_: None, verbose=0)


def test_training_logs_every_loss_finite_with_a_falling_cycle_loss_and_a_sample_grid(run):
    folder = Path(run["run_dir"])
    rows = list(csv.DictReader(open(folder / "history.csv")))
    for name in ("generator_ab_loss", "generator_ba_loss", "discriminator_a_loss", "discriminator_b_loss",
                 "cycle_loss", "identity_loss", "val_loss", "val_psnr"):
        values = [float(r[name]) for r in rows]
        assert len(values) == 3 and np.isfinite(values).all(), name
    assert float(rows[-1]["cycle_loss"]) < float(rows[0]["cycle_loss"])
    assert "r1_penalty" not in rows[0]  # the shipped recipe leaves R1 off, and a penalty not in the loss is not logged
    assert sorted(p.name for p in (folder / "samples").iterdir()) == [f"epoch_00{i}.png" for i in (1, 2, 3)]
    from PIL import Image

    grid = np.asarray(Image.open(folder / "samples" / "epoch_003.png"))
    assert grid.ndim == 3 and grid.shape[0] > grid.shape[1] / 2  # six rows of four pictures
    metrics = json.loads((folder / "metrics.json").read_text())
    for name in ("val_psnr", "val_identity_psnr", "val_ssim", "val_identity_ssim", "val_psnr_gain"):
        assert np.isfinite(metrics[name]), name
    assert metrics["val_psnr_gain"] == pytest.approx(metrics["val_psnr"] - metrics["val_identity_psnr"])
    assert 0 < metrics["val_identity_ssim"] < 1


def test_the_run_keeps_both_generators_and_best_keras_loads_back_whole(run):
    folder = Path(run["run_dir"])
    a2b = convforge.tasks.load_model(folder / "model.keras")
    b2a = convforge.tasks.load_model(folder / "model_b2a.keras")
    pictures = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    assert a2b(pictures).shape == b2a(pictures).shape == (2, 32, 32, 3)
    assert not np.allclose(np.asarray(a2b(pictures)), np.asarray(b2a(pictures)))
    # In a fresh process too: the generators' own layers (input skip, reflection padding) register on load.
    import subprocess
    import sys

    code = ("from convforge.modelfile import load_model; import sys; "
            "print(load_model(sys.argv[1]).get_layer('input_logit').name)")
    out = subprocess.run([sys.executable, "-c", code, str(folder / "model_b2a.keras")], capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0 and out.stdout.strip().endswith("input_logit"), out.stderr[-500:]
    import keras

    from convforge.train.cyclegan import CycleGAN

    whole = keras.models.load_model(folder / "best.keras", compile=False)  # CycleGAN is registered on import
    assert isinstance(whole, CycleGAN)
    assert [n.name for n in (whole.generator_ab, whole.discriminator_b)] == ["generator_ab", "discriminator_b"]


def test_paired_evaluation_equals_its_definition():
    """PSNR and SSIM against the paired truth, computed by hand for a model that halves its input."""
    import keras
    import tensorflow as tf

    from convforge.tasks import get_task

    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=(2, 6, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, -1, 2, 0, 1])
    dataset = tf.data.Dataset.from_tensor_slices((a, {"label": labels, "paired": b})).batch(4)
    inputs = keras.Input((16, 16, 3))
    halve = keras.Model(inputs, keras.layers.Rescaling(0.5)(inputs))
    metrics = get_task("translation").evaluate(halve, dataset, [])
    psnr = np.mean([10 * np.log10(1.0 / np.mean((0.5 * x - y) ** 2)) for x, y in zip(a, b)])
    identity = np.mean([10 * np.log10(1.0 / np.mean((x - y) ** 2)) for x, y in zip(a, b)])
    assert metrics["psnr"] == pytest.approx(psnr, rel=1e-4)
    assert metrics["identity_psnr"] == pytest.approx(identity, rel=1e-4)
    assert metrics["psnr_gain"] == pytest.approx(psnr - identity, rel=1e-3)
    assert metrics["ssim"] == pytest.approx(float(tf.reduce_mean(tf.image.ssim(0.5 * a, b, 1.0))), rel=1e-4)
    assert "judge_accuracy" not in metrics


def test_both_directions_export_verified_and_stylize_runs_the_run(run, tmp_path):
    from PIL import Image

    from convforge.cli import main as cli_main

    folder = run["run_dir"]
    for direction in ("a2b", "b2a"):
        result = convforge.export_run(folder, out=tmp_path / direction, formats=["saved_model", "tflite", "onnx"],
                                      direction=direction, progress=None)
        for entry in result["card"]["artifacts"]:
            assert entry["check"]["status"] == "passed" and entry["check"]["max_abs_diff"] <= 1e-4, entry
    content = tmp_path / "content.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(content)
    for direction in ("a2b", "b2a"):
        assert cli_main(["stylize", "--model", folder, "--content", str(content), "--direction", direction,
                         "--out", str(tmp_path / f"{direction}.png")]) == 0
        assert np.asarray(Image.open(tmp_path / f"{direction}.png")).shape == (40, 52, 3)
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a2b.png")),
                              np.asarray(Image.open(tmp_path / "b2a.png")))
    # A run without a B -> A generator: one line, exit 2, nothing written.
    assert cli_main(["export", str(Path(folder) / "model.keras"), "--direction", "b2a", "--formats", "tflite",
                     "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_the_a2b_generator_s_full_int8_tflite_stays_close_to_keras(run, tmp_path):
    """The path an int8 phone takes: the trained A -> B generator (input skip: the InputLogit's log of a clipped
    picture) quantized with domain A's pictures as calibration, run in LiteRT, within 0.25 of Keras everywhere."""
    from convforge.train.datasets import representative_images

    model = convforge.tasks.load_model(Path(run["run_dir"]) / "model.keras")
    pictures = representative_images(load_recipe(Path(run["run_dir"]) / "recipe.yaml"), 8).astype("float32")
    exported = convforge.export(model, tmp_path / "int8", formats=["tflite_int8"], representative=pictures,
                                inputs_for_check=pictures[:4], progress=None, latency_runs=0)
    entry = exported["card"]["artifacts"][0]
    assert entry["format"] == "tflite_int8" and entry["check"]["max_abs_diff"] < 0.25, entry


def test_summary_of_the_recipe_reports_the_patchgan_field(capsys):
    from convforge.cli import main as cli_main

    assert cli_main(["summary", str(RECIPE)]) == 0
    out = capsys.readouterr().out
    assert "discriminator_a: each output unit sees 70x70 input pixels" in out
    assert "generator_ab:" in out and "patch_logits" in out


@pytest.mark.parametrize("change, field", [
    (["data.normalize=imagenet"], "data.normalize"),
    (["model.architecture=resnet18"], "model.architecture"),
    (["model.options.alpha=0.5"], "model.options.alpha"),
    (["head.generator.name=vgg"], "head.generator.name"),
    (["head.gan_loss=wasserstein"], "head.gan_loss"),
    (["head.generator.residual_blocks=2"], "residual_blocks is a resnet generator option"),
])
def test_a_translation_recipe_names_what_it_cannot_take(change, field):
    with pytest.raises(convforge.RecipeError, match=field.replace(".", r"\.")):
        load_recipe(RECIPE, overrides=change)


def test_two_domains_are_the_translation_task_s_alone(tmp_path):
    from convforge.recipes import validate_recipe

    recipe = load_recipe(RECIPE)
    assert recipe.data.train.style == "textured" and recipe.data.domain_b.style == "flat"
    assert recipe.data.train.seed != recipe.data.domain_b.seed  # unpaired: no scene in both domains
    assert recipe.data.paired_val.seed == recipe.data.train.seed and recipe.data.paired_val.split == "val"
    plain = recipe.to_dict()
    del plain["data"]["domain_b"]
    with pytest.raises(convforge.RecipeError, match=r"data\.domain_b: .*two domains"):
        validate_recipe(plain)
    shapes = {"source": "shapes", "path": str(tmp_path / "s")}
    classifier = {"name": "c", "model": {"architecture": "lenet5"}, "data": {"train": shapes, "domain_b": shapes}}
    with pytest.raises(convforge.RecipeError, match=r"data\.domain_b: .*two-domain tasks, not classification"):
        validate_recipe(classifier)
    both = {**plain, "data": {**plain["data"], "domain_a": plain["data"]["train"]}}
    with pytest.raises(convforge.RecipeError, match=r"domain_a"):
        validate_recipe(both)


def test_cyclegan_trains_under_forced_mixed_precision(tmp_path):
    """The bf16 CPU path and the float16 GPU path (loss scaling on both optimizers) forced on CPU, with the R1
    penalty's gradient of a gradient: every loss stays finite and the generators compute in the low precision."""
    import keras

    for policy in ("mixed_bfloat16", "mixed_float16"):
        recipe = load_recipe(RECIPE, overrides=_small(tmp_path, f"train.precision={policy}", "train.epochs=1",
                                                      "train.steps_per_epoch=2", "head.r1_weight=0.01"))
        result = convforge.train(recipe, run_dir=tmp_path / policy, printer=lambda *_: None, verbose=0)
        rows = list(csv.DictReader(open(Path(result["run_dir"]) / "history.csv")))
        assert all(np.isfinite(float(r[k])) for r in rows for k in r if k != "epoch"), rows
        assert float(rows[-1]["r1_penalty"]) > 0
        assert result["metrics"]["precision"] == policy
        keras.config.set_dtype_policy("float32")
