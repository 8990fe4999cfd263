"""`convforge compare`: the architecture comparison's rows, files and errors, on the two smallest models."""
import json
import os

import pytest

from convforge import convmath
from convforge.backbones import build_backbone
from convforge.bench.compare import select_models, time_to_accuracy
from convforge.cli import main
from convforge.errors import ConvforgeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DIGITS = os.path.join(os.path.dirname(__file__), "..", "recipes", "classification", "lenet5_digits.yaml")


def test_compare_measures_and_writes_json_markdown_png(tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "--models", "lenet5,squeezenet1_1", "--input-size", "28", "--runs", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [str(out / f) for f in ("compare.json", "compare.md", "compare.png")]
    assert "[1/2] lenet5" in printed.err and "[2/2] squeezenet1_1" in printed.err  # one line per model

    result = json.loads((out / "compare.json").read_text())
    rows = {r["name"]: r for r in result["models"]}
    assert list(rows) == ["lenet5", "squeezenet1_1"]  # in the order the patterns came
    # LeNet-5 takes at least 32x32: raised, and the row says so; SqueezeNet 1.1 takes 28.
    assert rows["lenet5"]["input_shape"] == [32, 32, 1] and "raised from 28 to 32" in rows["lenet5"]["note"]
    assert rows["squeezenet1_1"]["input_shape"] == [28, 28, 3] and rows["squeezenet1_1"]["note"] == ""
    assert rows["lenet5"]["params"] == 61_706 and rows["squeezenet1_1"]["params"] == 1_235_496  # published
    for name, row in rows.items():
        model = build_backbone(name, input_shape=row["input_shape"])
        assert row["params"] == convmath.count_params(model)["total"]
        assert row["macs"] == convmath.count_macs(model)
        assert row["error"] is None
        assert row["keras_latency_ms"] > 0 and row["tflite_latency_ms"] > 0
        assert row["weights_mb"] == pytest.approx(row["params"] * 4 / 1e6, abs=1e-3)
        assert row["tflite_mb"] >= row["weights_mb"] * 0.99 and row["tflite_max_abs_diff"] < 1e-4
    table = (out / "compare.md").read_text()
    assert "| lenet5 | 32x32x1 | 61,706 |" in table and "| squeezenet1_1 | 28x28x3 | 1,235,496 |" in table
    assert (out / "compare.png").read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(os.listdir(out)) == ["compare.json", "compare.md", "compare.png"]  # no temp files left


def test_a_pattern_matching_nothing_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "--models", "lenet5,resnet5O", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no registered model matches 'resnet5O'" in err and "'resnet50'" in err
    assert not out.exists()
    with pytest.raises(ConvforgeError, match="registered: alexnet"):
        select_models("zzz*")  # nothing close: the registered names instead


def test_compare_with_a_recipe_records_time_to_accuracy(tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "--models", "lenet5", "--input-size", "32", "--runs", "2", "--out", str(out),
                 "--train-recipe", DIGITS, "--set", "train.epochs=2", "--set", "train.steps_per_epoch=10",
                 "--set", "data.augment=[]", "--target-accuracy", "0.3"]) == 0
    assert "epoch 2/2" in capsys.readouterr().err
    row = json.loads((out / "compare.json").read_text())["models"][0]
    assert row.get("train_error") is None and row["train_epochs"] == 2
    assert 0 < row["best_val_accuracy"] <= 1 and row["train_input_shape"] == [32, 32, 1]
    assert os.path.isfile(os.path.join(row["run_dir"], "epoch_times.csv"))
    assert row["run_dir"].startswith(str(out / "runs" / "lenet5"))
    if row["best_val_accuracy"] >= 0.3:
        assert row["epochs_to_accuracy"] in (1, 2) and row["time_to_accuracy_s"] > 0
    # The same run read back against a target it never reached.
    never = time_to_accuracy(row["run_dir"], 1.01)
    assert never["time_to_accuracy_s"] is None and never["epochs_to_accuracy"] is None
    assert never["best_val_accuracy"] == row["best_val_accuracy"]
    assert "time to 30% s" in (out / "compare.md").read_text()


def test_a_model_that_fails_is_recorded_in_its_row(tmp_path, monkeypatch):
    import convforge.backbones

    def collapse(name, **kwargs):
        raise ValueError("feature map collapsed to 0x0\nKeras traceback")

    monkeypatch.setattr(convforge.backbones, "build_backbone", collapse)
    from convforge.bench.compare import compare

    result = compare("lenet5", input_size=32, out_dir=tmp_path, runs=1, progress=None)
    row = result["models"][0]
    assert row["error"] == "ValueError: feature map collapsed to 0x0" and "params" not in row
    assert "| lenet5 | 32x32x1 | – |" in (tmp_path / "compare.md").read_text()
    assert (tmp_path / "compare.png").read_bytes()[:8] == PNG_SIGNATURE
