"""Adversarial attacks: FGSM against an independent gradient, PGD's ball, clip and seed, C&W and DeepFool against
FGSM's size, black-box attacks through a TFLite interpreter without gradients, the patch, adversarial training
and the `attack` command."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import convforge
from convforge import attacks
from convforge.attacks.target import WhiteBox
from convforge.recipes import load_recipe
from runchecks import check_finished_run, history_rows

ROOT = Path(__file__).resolve().parents[1]
ADVERSARIAL = ROOT / "recipes" / "classification" / "lenet5_digits_adversarial.yaml"


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits at 32x32 in 0..1 (nearest upsampling), a few hundred for speed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.kron(data.images, np.ones((4, 4)))[..., None].astype("float32") / 16.0
    return x, data.target.astype("int64")


@pytest.fixture(scope="module")
def classifier(digits):
    """A LeNet-5 (softmax top) trained for a few epochs: accurate, not robust."""
    x, y = digits
    keras.utils.set_random_seed(0)
    model = convforge.build_model("lenet5", num_classes=10, input_shape=(32, 32, 1))
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def held(digits, classifier):
    """48 held-out digits the classifier gets right."""
    x, y = digits
    x, y = x[1400:], y[1400:]
    right = classifier.predict(x, verbose=0).argmax(1) == y
    return x[right][:48], y[right][:48]


def _logits_model(model):
    """The same network ending in raw logits: an independent route to the gradient FGSM should use."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.layers[-1].activation = keras.activations.linear
    return clone


def test_whitebox_reads_logits_before_the_softmax_and_applies_the_contract(classifier, held):
    x, _ = held
    target = WhiteBox(classifier)
    np.testing.assert_allclose(tf.nn.softmax(target.logits(x[:8])).numpy(), classifier(x[:8]).numpy(), atol=1e-5)
    # A contract (mean/std on the 0..1 scale) becomes one affine map: 0..1 pixels -> (p - mean) / std.
    contract = {"resize": [32, 32], "channels": 1, "scale": 1 / 255, "mean": [0.25], "std": [0.5]}
    normalized = WhiteBox(classifier, preprocessing=contract)
    np.testing.assert_allclose(normalized.inputs(x[:2]), (x[:2] - 0.25) / 0.5, atol=1e-6)
    np.testing.assert_allclose(normalized.pixels((x[:2] - 0.25) / 0.5), x[:2], atol=1e-6)
    # The same eps in 0..255 pixels, with clip=(0, 255), is the same attack.
    scaled = WhiteBox(classifier, clip=(0, 255), preprocessing={**contract, "mean": [0.0], "std": [1.0]})
    np.testing.assert_allclose(scaled.logits(x[:4] * 255).numpy(), target.logits(x[:4]).numpy(), atol=1e-4)


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_is_eps_times_the_sign_of_an_independent_gradient(classifier, held, targeted):
    x, y = held
    labels = (y + 1) % 10 if targeted else y
    logits = _logits_model(classifier)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits(xt), from_logits=True)
        total = tf.reduce_sum(loss)
    gradient = tape.gradient(total, xt).numpy()
    expected = np.clip(x + (-1 if targeted else 1) * 0.1 * np.sign(gradient), 0, 1)
    result = attacks.fgsm(classifier, x, labels, 0.1, targeted=targeted)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    np.testing.assert_allclose(result.x_adv, expected, atol=1e-6)
    assert (result.queries == 1).all() and (result.norm <= 0.1 + 1e-6).all()
    predicted = classifier.predict(result.x_adv, verbose=0).argmax(1)
    np.testing.assert_array_equal(result.success, predicted == labels if targeted else predicted != labels)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_pgd_stays_in_the_ball_and_the_clip_range_and_repeats_under_a_seed(classifier, held, norm, eps):
    x, y = held
    result = attacks.pgd(classifier, x, y, eps, norm=norm, steps=10, restarts=2, seed=3)
    delta = (result.x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta ** 2).sum(1))
    assert (size <= eps + 1e-5).all() and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    np.testing.assert_allclose(result.norm, size, atol=1e-5)
    assert (result.queries == 20).all()
    again = attacks.pgd(classifier, x, y, eps, norm=norm, steps=10, restarts=2, seed=3)
    np.testing.assert_array_equal(again.x_adv, result.x_adv)
    other = attacks.pgd(classifier, x, y, eps, norm=norm, steps=10, restarts=2, seed=4)
    assert not np.array_equal(other.x_adv, result.x_adv)
    if norm == "linf":  # iterating finds at least what one step does
        assert result.success.mean() >= attacks.fgsm(classifier, x, y, eps).success.mean()


def test_carlini_wagner_and_deepfool_find_smaller_perturbations_than_fgsm(classifier, held):
    x, y = held
    fgsm = attacks.fgsm(classifier, x, y, 0.2)
    both = fgsm.success
    fgsm_l2 = np.sqrt(((fgsm.x_adv - x) ** 2).reshape(len(x), -1).sum(1))
    cw = attacks.carlini_wagner(classifier, x, y, steps=60, binary_steps=4)
    deep = attacks.deepfool(classifier, x, y)
    for result in (cw, deep):
        assert result.success.mean() >= 0.9
        found = both & result.success
        assert found.sum() >= 10 and np.median(result.norm[found]) < 0.5 * np.median(fgsm_l2[found])
        predicted = classifier.predict(result.x_adv, verbose=0).argmax(1)
        assert (predicted[result.success] != y[result.success]).all()
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert (deep.queries >= 1).all() and (deep.queries <= 50).all()


@pytest.fixture(scope="module")
def tflite_predict(classifier, tmp_path_factory):
    """The classifier exported to TFLite, called through the LiteRT interpreter only."""
    out = tmp_path_factory.mktemp("tflite")
    convforge.export(classifier, out, formats=["tflite"], progress=None, latency_runs=0)
    return attacks.artifact_predictor(out / "model.tflite")


@pytest.fixture
def no_gradients(monkeypatch):
    """Any gradient taken while the fixture is active fails the test."""
    class Refused:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a black-box attack opened a GradientTape")

    monkeypatch.setattr(tf, "GradientTape", Refused)


def test_black_box_attacks_run_on_a_tflite_interpreter_batched_and_without_gradients(held, tflite_predict,
                                                                                      no_gradients, classifier):
    x, y = held
    calls = tflite_predict.calls
    square = attacks.square(tflite_predict, x, y, 0.15, max_queries=200, seed=0)
    square_calls = tflite_predict.calls - calls
    # Batched: one call per iteration for all examples still being attacked, not one per example.
    assert square_calls <= 200 and square.queries.max() <= 200
    assert square.success.mean() > 0.3 and (square.norm <= 0.15 + 1e-6).all()
    simba = attacks.simba(tflite_predict, x, y, 0.3, max_queries=300, seed=0)
    assert simba.success.mean() > 0.1 and np.abs(simba.x_adv - x).max() <= 0.3 + 1e-6
    # SimBA only keeps moves that lower the true class's probability.
    rows = np.arange(len(y))
    before, after = tflite_predict(x)[rows, y], tflite_predict(simba.x_adv)[rows, y]
    assert (after <= before + 1e-6).all() and after.mean() < 0.9 * before.mean()
    assert simba.queries.max() <= 300
    again = attacks.simba(tflite_predict, x, y, 0.3, max_queries=300, seed=0)
    np.testing.assert_array_equal(again.x_adv, simba.x_adv)
    jump = attacks.hop_skip_jump(tflite_predict, x[:12], y[:12], max_queries=600, seed=0)
    assert jump.success.all() and jump.queries.max() <= 600
    # The boundary walk shrinks the perturbation far below the uniform noise it starts from (L2 ~ 18 here).
    assert np.median(jump.norm) < 6
    for result in (square, simba, jump):
        predicted = tflite_predict(result.x_adv).argmax(1)
        np.testing.assert_array_equal(result.success, predicted != y[:len(predicted)])


def test_transfer_crafts_on_the_surrogate_and_judges_on_the_target(classifier, held, tflite_predict):
    x, y = held
    calls = tflite_predict.calls
    result = attacks.transfer(classifier, tflite_predict, x, y, "pgd", eps=0.15, steps=10)
    assert tflite_predict.calls - calls == 1 and (result.queries == 1).all()
    # The artifact computes what Keras does, so what fools the surrogate fools it.
    assert result.success.mean() == pytest.approx(result.settings["surrogate_success_rate"], abs=0.05)


def test_the_patch_lands_where_it_is_placed_and_is_scored_on_held_out_images(classifier, digits):
    from convforge.attacks.patch import paste

    canvas = np.zeros((1, 32, 32, 1), np.float32)
    drawn = paste(tf.constant(canvas), tf.ones((8, 8, 1)), tf.constant([[1.0, 0.0, 10.0, 20.0]])).numpy()[0, ..., 0]
    assert drawn[16:24, 6:14].min() > 0.99 and drawn.sum() == pytest.approx(64, abs=1)
    x, _ = digits
    result = attacks.adversarial_patch(classifier, x[:200], 3, size=0.5, steps=60, seed=0)
    assert result.patch.shape == (16, 16, 1) and 0 <= result.patch.min() and result.patch.max() <= 1
    assert len(result.held_out) and set(result.held_out) <= set(range(150, 200)) | set(range(150))
    probabilities = classifier.predict(result.x_adv, verbose=0)
    np.testing.assert_array_equal(result.success, probabilities.argmax(1) == 3)
    # Trained, it pulls toward its target far more than a random patch of the same size at the same places.
    noise = np.random.default_rng(0).uniform(0, 1, (16, 16, 1)).astype(np.float32)
    placements = tf.constant([[1.0, 0.0, 16.0, 16.0]] * len(result.held_out))
    random_patch = paste(tf.constant(x[result.held_out]), tf.constant(noise), placements).numpy()
    trained = paste(tf.constant(x[result.held_out]), tf.constant(result.patch), placements).numpy()
    toward = [classifier.predict(images, verbose=0)[:, 3].mean() for images in (random_patch, trained)]
    assert toward[1] > 2 * toward[0] and result.train_success_rate > 0


def test_bad_attack_input_is_named(classifier, held):
    x, y = held
    with pytest.raises(convforge.ConvforgeError, match="outside clip"):
        attacks.fgsm(classifier, x * 2, y, 0.1)
    with pytest.raises(convforge.ConvforgeError, match="class ids"):
        attacks.pgd(classifier, x, y + 10, 0.1)
    with pytest.raises(convforge.ConvforgeError, match="norm"):
        attacks.pgd(classifier, x, y, 0.1, norm="l1")
    with pytest.raises(convforge.ConvforgeError, match="eps"):
        attacks.square(classifier, x, y, -1)


@pytest.fixture(scope="module")
def adversarial_run(tmp_path_factory):
    """The adversarial digits recipe, trained for 3 short epochs."""
    folder = tmp_path_factory.mktemp("adv")
    recipe = load_recipe(ADVERSARIAL, overrides=["train.epochs=3", "train.adversarial.steps=3"])
    return convforge.train(recipe, run_dir=folder / "run", printer=lambda *_: None, verbose=0)


def test_adversarial_training_learns_and_reports_robust_accuracy(adversarial_run):
    run = Path(adversarial_run["run_dir"])
    check_finished_run(run, load_recipe(run / "recipe.yaml"), epochs=3)  # test_train.py leaves the recipe here
    history = history_rows(run)
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["val_robust_accuracy"] <= metrics["val_clean_accuracy_attacked_set"] <= 1
    assert metrics["val_robust_attack"].startswith("pgd linf eps=0.1 steps=20")
    # The saved model is the plain network: it loads and predicts without any training code.
    model = keras.models.load_model(run / "model.keras", compile=False)
    assert model.output.shape[-1] == 10


def test_the_attack_command_writes_a_report_and_a_picture(adversarial_run, tmp_path):
    from convforge.cli import main as cli_main

    run = adversarial_run["run_dir"]
    assert cli_main(["attack", run, "--attack", "pgd", "--eps", "0.1", "--steps", "5", "--n", "16",
                     "--out", str(tmp_path / "pgd")]) == 0
    report = json.loads((tmp_path / "pgd" / "report.json").read_text())
    assert {"clean_accuracy", "robust_accuracy", "success_rate", "mean_norm", "mean_queries", "settings"} <= set(report)
    assert report["examples"] == 16 and report["settings"]["steps"] == 5 and report["mean_queries"] == 5
    assert report["robust_accuracy"] <= report["clean_accuracy"]
    assert (tmp_path / "pgd" / "attack.png").stat().st_size > 1000
    # A model file inside its run folder is a source too; black-box attacks query it through predictions only.
    assert cli_main(["attack", str(Path(run) / "model.keras"), "--attack", "square", "--eps", "0.1",
                     "--max-queries", "20", "--n", "8", "--out", str(tmp_path / "square")]) == 0
    assert json.loads((tmp_path / "square" / "report.json").read_text())["mean_queries"] <= 20
    # A setting the attack does not take, or a missing eps: one line, exit 2, no folder.
    assert cli_main(["attack", run, "--attack", "simba", "--eps", "0.1", "--steps", "3",
                     "--out", str(tmp_path / "bad")]) == 2
    assert cli_main(["attack", run, "--attack", "fgsm", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_adversarial_training_is_refused_for_tasks_without_class_scores():
    with pytest.raises(convforge.RecipeError, match="train.adversarial"):
        load_recipe(ROOT / "recipes" / "keypoints" / "face_heatmap_resnet18_faces.yaml",
                    overrides=["train.adversarial={eps: 0.1}"])


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_adversarial_training_and_attacks_run_under_a_forced_mixed_policy(policy, digits, tmp_path):
    """The paths a bf16 CPU or a GPU takes, forced here: PGD inside the train step of a mixed-precision model
    (float16 with its loss scaling), falling loss, and the white-box attacks on the mixed model itself."""
    recipe = load_recipe(ADVERSARIAL, overrides=["train.epochs=2", "train.steps_per_epoch=6",
                                                 "train.adversarial.steps=2", f"train.precision={policy}"])
    result = convforge.train(recipe, run_dir=tmp_path / "run", printer=lambda *_: None, verbose=0)
    run = Path(result["run_dir"])
    losses = [float(r["loss"]) for r in history_rows(run)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == policy and 0 <= metrics["val_robust_accuracy"] <= 1
    keras.config.set_dtype_policy(policy)
    model = convforge.build_model("lenet5", num_classes=10, input_shape=(32, 32, 1))
    keras.config.set_dtype_policy("float32")
    x, y = digits[0][:16], digits[1][:16]
    for attack in (attacks.fgsm(model, x, y, 0.1), attacks.pgd(model, x, y, 0.1, steps=3)):
        assert attack.x_adv.dtype == x.dtype and np.isfinite(attack.x_adv).all()
        assert np.abs(attack.x_adv - x).max() <= 0.1 + 1e-6 and np.abs(attack.x_adv - x).max() > 0.05
