"""`convforge bench`: every artifact of an export folder timed in its runtime, next to the Keras model."""
import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

import convforge  # noqa: E402
from convforge.bench.export_speed import (BENCH_JSON, BENCH_MD, ratios, summarize, time_calls,  # noqa: E402
                                           time_rounds)
from convforge.cli import main  # noqa: E402
from convforge.export import export  # noqa: E402

SHAPE = (32, 32, 1)
FORMATS = ["tflite", "tflite_int8", "onnx"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """lenet5 at 32x32x1 saved as .keras and exported to three formats, its path recorded in the card."""
    root = tmp_path_factory.mktemp("bench")
    model = convforge.build_model("lenet5", num_classes=4, input_shape=SHAPE)
    model_path = str(root / "model.keras")
    model.save(model_path)
    images = np.random.default_rng(0).standard_normal((16, *SHAPE)).astype("float32")
    out = root / "export"
    export(model, out, FORMATS, representative=images, progress=None, latency_runs=1,
           source={"model_path": model_path, "recipe": None})
    return out, model_path


def _bench(out, *extra):
    """Run `convforge bench` with few runs; return the exit code."""
    return main(["bench", str(out), "--runs", "5", "--batch", "4", "--max-seconds", "5", *extra])


def test_bench_writes_one_row_per_artifact_and_keras(exported, capsys):
    out, model_path = exported
    assert _bench(out, "--model", model_path) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / BENCH_JSON).read_text())
    files = [row["file"] for row in result["rows"]]
    assert files == ["model.keras", "model.tflite", "model_int8.tflite", "model.onnx"]
    assert result["rows"][0]["format"] == "keras (tf.function)"
    for row in result["rows"]:
        path = model_path if row["file"] == "model.keras" else os.path.join(out, row["file"])
        assert row["bytes"] == os.path.getsize(path), row["file"]
        assert 0 < row["latency_ms"]["median"] <= row["latency_ms"]["p90"], row["file"]
        assert row["latency_ms"]["runs"] <= 5 and row["images_per_s"] > 0 and row["batch"] == 4
        assert row["threads"] >= 1
    by_format = {row["format"]: row for row in result["rows"]}
    assert by_format["onnx"]["max_abs_diff"] <= 1e-4 and by_format["tflite_int8"]["metric"].startswith("top-1")
    assert result["settings"]["threads"] == 1 and result["settings"]["keras_call"] == "tf_function"
    assert result["keras_weights_match_card"] is True
    assert set(result["ratios"]) >= {"tflite_int8_vs_tflite", "onnx_vs_keras", "tflite_vs_keras"}
    assert all(v > 0 for v in result["ratios"].values() if v is not None)
    table = (out / BENCH_MD).read_text()
    assert "| model_int8.tflite |" in table and "images/s (batch 4)" in table and table in printed
    assert not [n for n in os.listdir(out) if n.startswith(".bench-")]


def test_bench_finds_the_keras_model_through_the_card_and_writes_to_out(exported, tmp_path):
    out, _ = exported
    target = tmp_path / "results"
    assert _bench(out, "--keras-call", "predict_on_batch", "--out", str(target)) == 0
    result = json.loads((target / BENCH_JSON).read_text())
    assert result["rows"][0]["format"] == "keras (predict_on_batch)"
    assert len(result["rows"]) == 1 + len(FORMATS) and (target / BENCH_MD).exists()


def test_bad_input_exits_2_and_writes_nothing(exported, tmp_path, capsys):
    out, _ = exported
    target = tmp_path / "never"
    assert _bench(tmp_path / "missing", "--out", str(target)) == 2
    assert not (tmp_path / "missing").exists() and not target.exists()
    assert "does not exist" in capsys.readouterr().err
    assert _bench(out, "--model", str(tmp_path / "nope.keras"), "--out", str(target)) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _bench(empty, "--out", str(target)) == 2
    assert "card.json" in capsys.readouterr().err
    assert not target.exists() and os.listdir(empty) == []


def test_timing_helpers():
    times = time_calls(lambda x: x, 0, runs=10, warmup=1)
    assert len(times) == 10 and all(t >= 0 for t in times)
    assert summarize([1.0, 2.0, 3.0, 4.0, 10.0]) == {"median": 3.0, "p90": 7.6, "min": 1.0, "runs": 5}
    assert len(time_calls(lambda x: x, 0, runs=1000, max_seconds=0.0, min_runs=3)) == 3
    order = []
    times = time_rounds([(order.append, 'a'), (order.append, 'b')], runs=4, warmup=0)
    assert [len(t) for t in times] == [4, 4] and order == ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']
    rows = [{"format": "keras (tf.function)", "latency_ms": {"median": 4.0}},
            {"format": "tflite", "latency_ms": {"median": 2.0}},
            {"format": "tflite_int8", "latency_ms": {"median": 1.0}}]
    assert ratios(rows) == {"tflite_int8_vs_tflite": 0.5, "onnx_vs_keras": None, "tflite_vs_keras": 0.5,
                            "saved_model_vs_keras": None}


def test_a_model_with_other_weights_is_flagged(exported, tmp_path):
    out, _ = exported
    other = convforge.build_model("lenet5", num_classes=4, input_shape=SHAPE)
    # conftest seeds every test alike, so a fresh build can equal the fixture's model: change it for sure
    other.set_weights([w + 0.5 for w in other.get_weights()])
    other_path = str(tmp_path / "other.keras")
    other.save(other_path)
    assert _bench(out, "--model", other_path, "--out", str(tmp_path), "--runs", "2") == 0
    result = json.loads((tmp_path / BENCH_JSON).read_text())
    assert result["keras_weights_match_card"] is False
    assert "weights differ" in (tmp_path / BENCH_MD).read_text()
