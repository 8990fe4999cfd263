"""Quantized artifacts are judged by the task metric on the val split, with the recipe's thresholds."""
import json
import os
import pathlib

import keras
import numpy as np
import pytest

import convforge
from convforge import cli
from convforge.errors import ExportError

ROOT = pathlib.Path(__file__).resolve().parents[1]
DIGITS = ROOT / "recipes" / "classification" / "lenet5_digits.yaml"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """lenet5 trained a few epochs on the embedded digits: a real model with a real val split."""
    run = tmp_path_factory.mktemp("digits") / "run"
    assert cli.main(["train", str(DIGITS), "--set", "train.epochs=6", "--run-dir", str(run), "--quiet"]) == 0
    return run


def _card(folder):
    return json.loads((pathlib.Path(folder) / "card.json").read_text())


def test_export_scores_every_artifact_on_the_val_split(digits_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert cli.main(["export", str(digits_run), "--formats", "tflite,tflite_dynamic,tflite_int8,onnx",
                     "--out", str(out)]) == 0
    card = _card(out)
    metrics = json.loads((digits_run / "metrics.json").read_text())
    by_format = {a["format"]: a["check"] for a in card["artifacts"]}
    for fmt, check in by_format.items():
        scored = check["metric"]
        assert scored["name"] == "accuracy" and scored["images"] == 359, (fmt, scored)  # 20% of 1797 digits
        # The Keras number is the run's own val accuracy: the same split, the same preprocessing.
        assert scored["keras"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
        assert scored["keras"] > 0.8
    for fmt in ("tflite", "onnx"):
        assert abs(by_format[fmt]["metric"]["drop_points"]) < 1e-9 and "max_drop_points" not in by_format[fmt]["metric"]
    for fmt, allowed in (("tflite_dynamic", 1.0), ("tflite_int8", 1.0)):
        scored = by_format[fmt]["metric"]
        assert scored["max_drop_points"] == allowed and scored["status"] == "passed"
        assert scored["drop_points"] <= allowed and scored["top1_agreement"] >= 0.97
        assert by_format[fmt]["status"] == "reported"
    assert card["options"]["representative_images"] == 200
    md = (out / "card.md").read_text()
    assert "val metric" in md and card["model"]["weights_sha256"] in md
    assert card["source"]["recipe"] == "lenet5_digits"
    assert card["labels"] == [str(d) for d in range(10)] and "labels (class index order): 0 `0`" in md
    assert card["source"]["recipe_file"] == str((digits_run / "recipe.yaml").resolve())
    from convforge.export import weights_sha256

    model = keras.models.load_model(digits_run / "model.keras", compile=False)
    assert card["model"]["weights_sha256"] == weights_sha256(model)
    assert "val accuracy" in capsys.readouterr().out


def test_int8_is_calibrated_on_unaugmented_training_images(digits_run, tmp_path, monkeypatch):
    from convforge.recipes import load_recipe
    from convforge.train.datasets import plain_train_dataset

    seen = {}

    def fake_export(model, out, formats, **kwargs):
        seen.update(kwargs)
        return {"out_dir": str(out)}

    monkeypatch.setattr(convforge.export, "export", fake_export)
    assert cli.main(["export", str(digits_run), "--formats", "tflite_int8", "--out", str(tmp_path / "x"),
                     "--no-verify-fail", "--int8-io", "uint8", "--opset", "15"]) == 0
    recipe = load_recipe(digits_run / "recipe.yaml")
    expected = np.concatenate([np.asarray(x) for x, _ in plain_train_dataset(recipe)])[:200]
    np.testing.assert_array_equal(seen["representative"], expected)
    assert seen["fail_on_drop"] is False
    assert seen["max_metric_drop"] == {"tflite_int8": 1.0, "tflite_dynamic": 1.0, "tflite_fp16": 0.5}
    assert seen["metric_name"] == "accuracy" and seen["validation"] is not None
    assert seen["int8_io"] == "uint8" and seen["opset"] == 15


def _digits_model_and_data(run):
    from convforge.recipes import load_recipe
    from convforge.tasks import get_task
    from convforge.train.datasets import datasets_for_recipe

    recipe = load_recipe(run / "recipe.yaml")
    data = datasets_for_recipe(recipe, get_task("classification"))
    model = keras.models.load_model(run / "model.keras", compile=False)
    calibration = np.concatenate([np.asarray(x) for x, _ in data.val.take(4)])
    return model, data, calibration


def test_a_drop_over_the_threshold_fails_atomically(digits_run, tmp_path):
    model, data, calibration = _digits_model_and_data(digits_run)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    # An impossible threshold (the artifact must beat Keras by 100 points) makes any int8 model fail.
    with pytest.raises(ExportError, match=r"tflite_int8: accuracy \d+\.\d+% against Keras \d+\.\d+% on 200 val "
                                          r"images loses -?\d+\.\d+ points, over the allowed -100"):
        convforge.export(model, out, ["tflite", "tflite_int8"], representative=calibration, progress=None,
                         validation=data.val, validation_size=200, max_metric_drop={"tflite_int8": -100.0})
    assert sorted(os.listdir(out)) == ["keep.txt"]

    result = convforge.export(model, out, ["tflite", "tflite_int8"], representative=calibration, progress=None,
                              validation=data.val, validation_size=200, max_metric_drop={"tflite_int8": -100.0},
                              fail_on_drop=False)
    int8 = next(a["check"] for a in result["card"]["artifacts"] if a["format"] == "tflite_int8")
    assert int8["status"] == "metric drop over threshold" and int8["metric"]["status"] == "failed"
    assert "over the allowed -100" in int8["warning"]
    assert (out / "model_int8.tflite").exists() and (out / "keep.txt").exists()


def test_localization_is_judged_by_accuracy_at_iou50():
    from convforge.tasks import get_task

    task = get_task("localization")
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]], "float32")
    batches = [(np.zeros((2, 8, 8, 3), "float32"), {"label": np.array([0, 1]), "box": boxes})]

    def predict(images):
        # right class and box for the first image, right class but a disjoint box for the second
        return {"label": np.array([[0.9, 0.1], [0.2, 0.8]], "float32"),
                "box": np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.1, 0.1]], "float32")}

    assert task.headline_metric == "accuracy_at_iou50"
    assert task.score(predict, batches) == pytest.approx(0.5)
