"""The `convforge` command as a user types it: tables, pictures, and one-line errors with exit code 2."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convforge.cli import main


@pytest.fixture
def shapes_image(tmp_path):
    img = np.full((96, 96, 3), 230, "uint8")
    img[20:60, 30:70] = (200, 40, 40)
    path = tmp_path / "shapes.png"
    Image.fromarray(img).save(path)
    return path


def test_models_lists_the_registry(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVFORGE_CACHE", str(tmp_path / "cache"))
    assert main(["models", "squeezenet*"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1_0" in out and "1,248,424" in out and "squeezenet1_1" in out and "1,235,496" in out
    assert "2 models" in out
    assert list((tmp_path / "cache").glob("model_table-*.json"))  # a second call answers from the cache


def test_summary_prints_layers_and_totals(capsys):
    assert main(["summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 61,706" in out
    c5 = next(line for line in out.splitlines() if line.startswith("c5 "))
    assert c5.split()[-4] == "32"  # C5's receptive field spans LeNet's whole 32x32 input
    assert main(["summary", "resnet18", "--input-shape", "64,64,3", "--num-classes", "10"]) == 0
    assert "Total params: 11," in capsys.readouterr().out


def test_summary_draws_receptive_fields(capsys, shapes_image, tmp_path):
    out_png = tmp_path / "rf.png"
    assert main(["summary", "vgg11", "--input-shape", "96,96,3", "--rf-image", str(shapes_image),
                 "--layer", "block3_conv2_relu", "--out", str(out_png)]) == 0
    assert "block3_conv2_relu" in capsys.readouterr().out
    with Image.open(out_png) as img:
        assert img.width > 2 * img.height  # the named layer plus feature levels, side by side


def test_filters_compares_hand_made_and_model_filters(capsys, shapes_image, tmp_path):
    out_png = tmp_path / "filters.png"
    assert main(["filters", str(shapes_image), "--model", "resnet18", "--input-shape", "64,64,3",
                 "--out", str(out_png)]) == 0
    assert out_png.exists()
    assert main(["filters", str(shapes_image), "--kernels", "sobel", "--out", str(out_png)]) == 2
    assert "kernel 'sobel' is unknown" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["summary", "resnet51"], "unknown architecture 'resnet51' (did you mean 'resnet50'"),
    (["summary", "inception_v3", "--input-shape", "64,64,3"], "at least 75x75"),
    (["summary", "vgg11", "--input-shape", "64,64,3", "--rf-image", "missing.png", "--layer", "blok3"],
     "has no layer 'blok3'"),
    (["summary", "vgg11", "--input-shape", "64,64,3", "--rf-image", "missing.png"], "'missing.png' does not exist"),
    (["models", "nonexistent*"], "no registered model matches"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("convforge: error:")
    assert not list(tmp_path.glob("*.png"))  # nothing half-written


def test_console_script_exit_code():
    """The installed entry point, as a new user would type it."""
    exe = os.path.join(os.path.dirname(sys.executable), "convforge")
    proc = subprocess.run([exe, "summary", "alexnett"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("convforge: error: unknown architecture 'alexnett'")
    assert proc.stdout == ""


def test_data_shapes_then_to_tfrecord_round_trips(tmp_path, capsys):
    from convforge.data import coco, tfrecord

    out = tmp_path / "shapes"
    assert main(["data", "shapes", str(out), "--n", "20", "--size", "32", "--objects", "1,2"]) == 0
    ann = out / "annotations" / "instances_train.json"
    assert str(ann) in capsys.readouterr().out
    assert main(["data", "to-tfrecord", str(ann), str(tmp_path / "tfr" / "train"), "--images",
                 str(out / "images" / "train"), "--shards", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "16 examples, 4 classes -> 2 shard(s):"
    shards = sorted((tmp_path / "tfr").glob("train-*.tfrecord"))
    assert [p.name for p in shards] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    source = coco(str(ann), str(out / "images" / "train"))
    examples = tfrecord(str(tmp_path / "tfr" / "train-*.tfrecord"))
    assert examples.class_names == source.class_names
    got = sorted(int(e["label"]) for e in examples.dataset.as_numpy_iterator())
    assert got == sorted(r["label"] for r in source.records)


@pytest.mark.parametrize("argv,message", [
    (["data", "to-tfrecord", "missing.json", "out/x", "--images", "imgs"], "does not exist"),
    (["data", "to-tfrecord", "missing.json", "out/x"], "pass --images FOLDER"),
    (["data", "to-tfrecord", "nothing-here", "out/x"], "is not a recipe (.yaml), a COCO JSON"),
    (["data", "shapes", "out", "--n", "0"], "must be a positive integer"),
])
def test_bad_data_commands_are_one_line_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_localization_model_loads_in_a_fresh_process(tmp_path):
    """A saved localizer holds convforge's own layers (BoxOrder); export must read it without any prior import."""
    import convforge

    model = convforge.build_model("lenet5", task="localization", num_classes=3, input_shape=(32, 32, 1))
    model.save(tmp_path / "loc.keras")
    proc = subprocess.run([sys.executable, "-m", "convforge.cli", "export", str(tmp_path / "loc.keras"), "--formats",
                           "tflite,onnx", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "model.tflite").exists() and (tmp_path / "out" / "model.onnx").exists()
