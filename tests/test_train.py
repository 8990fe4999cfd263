"""Training: every shipped recipe trains, loss falls, a killed run resumes bit-exactly, a NaN loss stops with one
line and keeps the last good checkpoint, Mirrored and MultiWorkerMirrored strategies run, precision resolves
for the machine, and a bad recipe fails before any run folder exists.

Runs happen in a temporary working directory (runs/ and data/ land there) at tiny sizes; the tests that need
a fresh TensorFlow (logical devices, TF_CONFIG, SIGKILL) run `python -m convforge.cli` or a short script in a
subprocess.
"""
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from convforge.cli import main as cli_main
from convforge.recipes import load_recipe
from convforge.tasks import get_task
from runchecks import check_finished_run, history_rows
from smallmodels import tiny

ROOT = Path(__file__).resolve().parents[1]
# Templates point at users' files, which are not here; tests/test_detection.py trains them on small stand-ins.
# Translation recipes build two domains' networks, not a backbone: test_translation.py trains the shipped one.
RECIPES = sorted(p for p in ROOT.glob("recipes/*/*.yaml") if p.parent.name not in ("base", "templates",
                                                                                   "translation"))
# These recipes are trained, shrunk the same way (smallmodels.tiny), by their task's own tests, which run the
# same checks on their run (runchecks.check_finished_run); training them here again cost ~4 minutes of a
# make test. test_recipes_trained_elsewhere_are_checked_there keeps that true.
TRAINED_ELSEWHERE = {"ssd_resnet18_shapes": "test_detection.py", "mask_rcnn_resnet18_shapes":
                     "test_instance_segmentation.py", "unet_vgg11_shapes": "test_segmentation.py",
                     "face_heatmap_resnet18_faces": "test_keypoints.py", "pose_heatmap_resnet18_figures":
                     "test_pose.py", "fast_vgg16_shapes": "test_style.py", "adain_vgg19_shapes": "test_style.py",
                     "lenet5_digits_adversarial": "test_attacks.py"}
TRAINED_HERE = [p for p in RECIPES if p.stem not in TRAINED_ELSEWHERE]
DIGITS = ROOT / "recipes" / "classification" / "lenet5_digits.yaml"
RESNET18 = ROOT / "recipes" / "classification" / "resnet18_shapes.yaml"
SUBPROCESS_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                  "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
SUBPROCESS_ENV.pop("TF_CONFIG", None)
# Keras 3.15's convert_to_numpy calls np.array on TF variables, which NumPy 2 flags once per variable saved.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """One tiny shapes set (64 images of 32 px) shared by the module's shapes runs; generated on first use."""
    return tmp_path_factory.mktemp("shapes32")


def cli_argv(recipe_path, sets, *extra):
    argv = ["train", str(recipe_path), "--quiet", *extra]
    for item in sets:
        argv += ["--set", item]
    return argv


def subprocess_cli(recipe_path, sets, *extra):
    """The `convforge train` command line as a subprocess argument list."""
    return [sys.executable, "-m", "convforge.cli", *cli_argv(recipe_path, sets, *extra)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ every recipe

# Each recipe trains as shipped (its task, data source, augmentations, optimizer, schedule) on a small instance
# of its architecture: building and tracing the full-size models costs ~20 s each on 2 cores, and the full
# models are built, saved and loaded in test_backbones.py. Recipes are validated unchanged first (in tiny()).
# Tracing AdamW's update also costs ~55 ms per variable; the models that keep hundreds of variables at their
# small size train with plain SGD here (AdamW is exercised by the loss and resume tests).
_MANY_VARIABLES = {"inception_v3_shapes", "googlenet_shapes", "mobilenet_v2_shapes", "mobilenet_v2_shapes_loc"}
@pytest.mark.parametrize("recipe_path", TRAINED_HERE, ids=[p.stem for p in TRAINED_HERE])
def test_every_shipped_recipe_trains_one_epoch(recipe_path, shapes_dir, tmp_path, monkeypatch):
    from convforge.train import train

    monkeypatch.chdir(tmp_path)
    sets = tiny(recipe_path, shapes_dir, small_model=True)
    sets += ["train.optimizer=sgd"] if recipe_path.stem in _MANY_VARIABLES else []
    recipe = load_recipe(recipe_path, overrides=sets)
    lines = []
    result = train(recipe, run_dir=tmp_path / "run", printer=lines.append, verbose=0)

    run_dir = tmp_path / "run"
    assert lines[-1] == str(run_dir) == result["run_dir"]
    check_finished_run(run_dir, recipe, epochs=1)
    assert not (tmp_path / "runs").exists()


def test_recipes_trained_elsewhere_are_checked_there():
    """Every shipped recipe left out above is trained by the test file named for it and checked there."""
    assert set(TRAINED_ELSEWHERE) <= {p.stem for p in RECIPES}
    for stem, test_file in TRAINED_ELSEWHERE.items():
        text = (ROOT / "tests" / test_file).read_text()
        assert f"{stem}.yaml" in text and "check_finished_run(" in text, (stem, test_file)


# ---------------------------------------------------------------------------------------------- learning

def test_loss_falls_on_shapes(shapes_dir, tmp_path, monkeypatch):
    from convforge.train import train

    monkeypatch.chdir(tmp_path)
    # resnet18's layout at a quarter of its widths (0.7 M parameters), so each epoch's checkpoints stay small.
    sets = tiny(RESNET18, shapes_dir, epochs=4, steps=3) + [
        "model.options={widths: [16, 32, 64, 128]}", "data.augment=[]", "train.schedule=constant",
        "train.optimizer.learning_rate=0.001"]
    train(load_recipe(RESNET18, overrides=sets), run_dir=tmp_path / "run", printer=lambda *_: None, verbose=0)
    losses = [float(r["loss"]) for r in history_rows(tmp_path / "run")]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses


# ------------------------------------------------------------------------------------------------ resume

@pytest.mark.timeout(300)
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """Kill a run after its second epoch; resumed, it ends with exactly the weights of a run never killed."""
    sets = ["train.epochs=5", "train.steps_per_epoch=20", "data.batch_size=16", "train.deterministic=true",
            "train.seed=3"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    meta = killed / "backup" / "training_metadata.json"
    kw = dict(cwd=tmp_path, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The uninterrupted reference runs alongside the one to be killed.
    reference = subprocess.Popen(subprocess_cli(DIGITS, sets, "--run-dir", str(whole)), **kw)
    victim = subprocess.Popen(subprocess_cli(DIGITS, sets, "--run-dir", str(killed)), **kw)
    try:
        done = 0
        deadline = time.monotonic() + 240
        while victim.poll() is None and time.monotonic() < deadline:
            try:
                done = json.loads(meta.read_text())["epoch"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 2:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        out = victim.communicate(timeout=30)[0]
        assert victim.returncode == -signal.SIGKILL, f"the run was not killed mid-way (epoch {done}):\n{out}"
        assert 2 <= done < 5
        assert not (killed / "metrics.json").exists()
        ref_out = reference.communicate(timeout=240)[0]
        assert reference.returncode == 0, ref_out
    finally:
        for proc in (victim, reference):
            if proc.poll() is None:
                proc.kill()

    resumed = subprocess.run(subprocess_cli(DIGITS, sets, "--resume", str(killed)), timeout=240, **kw)
    assert resumed.returncode == 0, resumed.stdout
    assert f"resuming {killed} from epoch {done + 1}/5" in resumed.stdout
    assert resumed.stdout.strip().splitlines()[-1] == str(killed)

    assert json.loads((killed / "metrics.json").read_text())["epochs_completed"] == 5
    # Same batches, same augmentation draws, same optimizer state: every logged number and weight is equal.
    assert history_rows(killed) == history_rows(whole)
    a = keras.models.load_model(killed / "model.keras", safe_mode=True)
    b = keras.models.load_model(whole / "model.keras", safe_mode=True)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


# --------------------------------------------------------------------------------------------------- NaN

def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from convforge.train import train

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    sets = ["train.steps_per_epoch=3", "data.batch_size=16", "train.schedule=constant", "data.augment=[]"]
    sgd = "train.optimizer={name: sgd, learning_rate: %s}"
    # One good epoch ...
    train(load_recipe(DIGITS, overrides=sets + ["train.epochs=1", sgd % "0.01"]), run_dir=run_dir,
          printer=lambda *_: None, verbose=0)
    good = keras.models.load_model(run_dir / "model.keras").get_weights()
    capsys.readouterr()
    # ... then an absurd learning rate: the weights overflow and the loss turns NaN in epoch 2.
    code = cli_main(cli_argv(DIGITS, sets + ["train.epochs=3", sgd % "1.0e+38"], "--resume", str(run_dir)))
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert re.match(r"convforge: error: lenet5_digits: loss became (nan|-?inf) at epoch 2, batch \d+;", err), err
    assert "the checkpoint of epoch 1 is kept" in err

    backup = run_dir / "backup"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    net = get_task("classification").build_model("lenet5", (32, 32, 1), 10)
    net.load_weights(backup / "latest.weights.h5")
    for w, g in zip(net.get_weights(), good, strict=True):
        assert np.isfinite(w).all()
        np.testing.assert_array_equal(w, g)
    # The NaN epoch is neither logged as a result nor saved over the good best.keras.
    assert [r["epoch"] for r in history_rows(run_dir)] == ["0"]
    best = keras.models.load_model(run_dir / "best.keras").get_weights()
    for w, g in zip(best, good, strict=True):
        np.testing.assert_array_equal(w, g)


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sets = ["train.epochs=2", "train.steps_per_epoch=3", "data.batch_size=16", "train.schedule=constant",
            "data.augment=[]", "train.optimizer={name: sgd, learning_rate: 1.0e+38}"]
    assert cli_main(cli_argv(DIGITS, sets, "--run-dir", "run")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "at epoch 1" in err and "no epoch had finished, so there is no checkpoint" in err
    assert not (tmp_path / "run" / "backup" / "latest.weights.h5").exists()
    assert not (tmp_path / "run" / "best.keras").exists()
    assert history_rows(tmp_path / "run") == []


def test_training_without_a_val_split_finishes_with_its_plot(tmp_path, monkeypatch, capsys):
    """An image folder has no val split of its own: the run ends with model, metrics and training curves."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(rng.normal(colour, 20, (24, 24, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    sets = tiny(DIGITS) + ["data.train={source: image_folder, path: imgs}", "data.val=null", "data.augment=[]",
                           "model.input_shape=[32,32,1]", "model.num_classes=null"]
    assert cli_main(cli_argv(DIGITS, sets, "--run-dir", "run")) == 0, capsys.readouterr().err
    run = tmp_path / "run"
    assert (run / "model.keras").exists() and (run / "training_curves.png").exists()
    assert "val_accuracy" not in json.loads((run / "metrics.json").read_text())


def test_recipes_read_yaml_1_2_floats(tmp_path):
    """`1e-3`, `1E5` and `.5` are numbers in recipes and in --set, as every user writes them."""
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(DIGITS.read_text().replace("learning_rate: 0.003", "learning_rate: 1e-3"))
    recipe = load_recipe(recipe_file, overrides=["train.optimizer.weight_decay=1E-5", "train.label_smoothing=.1"])
    assert recipe.train.optimizer.kwargs["learning_rate"] == 0.001
    assert recipe.train.optimizer.kwargs["weight_decay"] == 1e-5 and recipe.train.label_smoothing == 0.1
    assert load_recipe(DIGITS, overrides=["train.epochs=3"]).train.epochs == 3  # integers stay integers


# ------------------------------------------------------------------------------------------ distribution

MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from convforge.recipes import load_recipe
from convforge.train import train
recipe = load_recipe(sys.argv[1], overrides=json.loads(sys.argv[2]))
result = train(recipe, run_dir="run", verbose=0)
print("METRICS " + json.dumps(result["metrics"]))
"""


@pytest.mark.timeout(240)
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    sets = tiny(DIGITS) + ["train.distribution=mirrored"]
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(DIGITS), json.dumps(sets)], cwd=tmp_path,
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads(proc.stdout.split("METRICS ", 1)[1].splitlines()[0])
    assert metrics["replicas"] == 2 and metrics["strategy"] == "MirroredStrategy"
    assert math.isfinite(metrics["loss"]) and metrics["epochs_completed"] == 1
    assert "(2 replicas)" in proc.stdout
    assert proc.stdout.split("METRICS ", 1)[0].strip().splitlines()[-1] == "run"  # the run dir printed last


@pytest.mark.timeout(240)
def test_multi_worker_mirrored_strategy_with_two_local_workers(tmp_path):
    """Two workers on 127.0.0.1; worker 0 names multi_worker and worker 1 auto (which picks it from TF_CONFIG).

    Only the chief writes the run: worker 1 is given its own --run-dir, which must never appear, and its
    scratch folder (under its TMPDIR) must be gone when it exits.
    """
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    scratch = tmp_path / "worker1_tmp"
    scratch.mkdir()
    procs = []
    for index, distribution in enumerate(["multi_worker", "auto"]):
        env = {**SUBPROCESS_ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                          "task": {"type": "worker", "index": index}})}
        if index:
            env["TMPDIR"] = str(scratch)
        sets = tiny(DIGITS, epochs=2) + [f"train.distribution={distribution}"]
        procs.append(subprocess.Popen(subprocess_cli(DIGITS, sets, "--run-dir", str(tmp_path / f"run{index}")),
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=180)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out
        assert "(2 replicas)" in out, out  # worker 1's `auto` chose multi_worker from TF_CONFIG
    metrics = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["epochs_completed"] == 2
    assert metrics["strategy"].startswith(("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy"))
    assert math.isfinite(metrics["loss"])
    for name in ("model.keras", "best.keras", "history.csv", "backup"):
        assert (tmp_path / "run0" / name).exists(), name
    assert not (tmp_path / "run1").exists()
    assert list(scratch.iterdir()) == []
    # Both workers saw the same synchronized training.
    epoch_lines = [[line for line in out.splitlines() if line.startswith("epoch 2/2")] for out in outs]
    assert all(len(lines) == 1 for lines in epoch_lines), outs
    strip = lambda line: line.split(": ", 1)[1]  # noqa: E731  (drop the per-process timing)
    assert strip(epoch_lines[0][0]) == strip(epoch_lines[1][0])


# ---------------------------------------------------------------------------------------------- precision

def test_auto_precision_fits_this_machine():
    import tensorflow as tf

    from convforge.train.hardware import cpu_has_bf16, resolve_precision

    if tf.config.list_physical_devices("GPU"):
        expected = "mixed_float16"
    else:
        expected = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    assert resolve_precision("auto") == expected
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_mixed_bfloat16_trains_with_a_float32_head(tmp_path, monkeypatch):
    from convforge.train import train

    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(DIGITS, overrides=tiny(DIGITS) + ["train.precision=mixed_bfloat16"])
    result = train(recipe, run_dir=tmp_path / "run", printer=lambda *_: None, verbose=0)
    assert result["metrics"]["precision"] == "mixed_bfloat16"
    assert math.isfinite(result["metrics"]["loss"])
    model = keras.models.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    head = model.get_layer("predictions")
    assert head.compute_dtype == "float32"
    assert model(np.zeros((1, *recipe.model.input_shape), "float32")).dtype == "float32"


# ------------------------------------------------------------------------------------------ bad commands

@pytest.mark.parametrize("extra, message", [
    (["--set", "train.epochz=3"], "train.epochz"),
    (["--resume", "nowhere"], "nothing to resume"),
])
def test_bad_train_command_is_one_line_exit_2_and_no_run(extra, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", str(RESNET18), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    if "epochz" in message:
        assert "'epochs'" in err  # the close match
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_a_run_folder_is_not_silently_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "backup").mkdir(parents=True)
    assert cli_main(["train", str(DIGITS), "--run-dir", "run"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume run" in err


# ---------------------------------------------------------------------------------------- custom statistics

def test_custom_normalize_stats_are_on_the_pixel_scale_end_to_end(tmp_path, monkeypatch):
    """normalize: {mean, std} in 0..255 gives the pipeline, the saved preprocessing and predict the same
    numbers: the digits normalized by their own statistics come out with mean ~0 and std ~1."""
    from convforge.train.datasets import datasets_for_recipe

    monkeypatch.chdir(tmp_path)
    # The digits are 0..16 ink upsampled to 32 px; their pixel statistics on the 0..255 scale:
    recipe = load_recipe(DIGITS, overrides=tiny(DIGITS) + ["data.augment=[]"])
    data = datasets_for_recipe(recipe, get_task("classification"))
    images = np.concatenate([np.asarray(x) for x, _ in data.val])  # "unit": pixels / 255
    mean, std = float(images.mean() * 255), float(images.std() * 255)
    assert 10 < mean < 200 and std > 10
    sets = tiny(DIGITS) + ["data.augment=[]", f"data.normalize={{mean: [{mean}], std: [{std}]}}"]
    recipe = load_recipe(DIGITS, overrides=sets)
    data = datasets_for_recipe(recipe, get_task("classification"))
    normalized = np.concatenate([np.asarray(x) for x, _ in data.val])
    assert abs(normalized.mean()) < 0.01 and abs(normalized.std() - 1.0) < 0.01
    assert data.preprocessing["mean"] == pytest.approx([mean / 255]) and data.preprocessing["scale"] == 1 / 255

    assert cli_main(cli_argv(DIGITS, sets)) == 0
    run = next((tmp_path / "runs" / "lenet5_digits").iterdir())
    saved = json.loads((run / "preprocessing.json").read_text())
    assert saved["mean"] == pytest.approx([mean / 255]) and saved["std"] == pytest.approx([std / 255])


def test_normalize_stats_on_the_unit_scale_are_refused(tmp_path, capsys):
    assert cli_main(["check", str(DIGITS), "--set", "data.normalize={mean: [0.5], std: [0.2]}"]) == 2
    err = capsys.readouterr().err
    assert "data.normalize.std" in err and "0..255 pixel scale" in err
