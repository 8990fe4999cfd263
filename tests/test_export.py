"""convforge.export: every artifact run back in its own runtime, names kept, failures leave no trace."""
import hashlib
import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

import convforge  # noqa: E402
from convforge.errors import ExportError  # noqa: E402
from convforge.export import FORMATS, compare_quantized, export, verify_dir  # noqa: E402
from convforge.export.formats import NAMES  # noqa: E402
from convforge.export.card import sha256_path  # noqa: E402
from convforge.export.verify import runner  # noqa: E402

SHAPE = (32, 32, 3)


def _images(n, shape=SHAPE, seed=0):
    """Standard-normal float32 images, i.e. already normalized inputs."""
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype("float32")


def _listing(folder):
    """Every path under folder, hidden ones included."""
    return sorted(os.path.relpath(os.path.join(r, n), folder) for r, ds, fs in os.walk(folder) for n in ds + fs)


def _max_diff(a, b):
    """Largest absolute difference of two arrays, in float64."""
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory):
    """resnet18 at 32 px exported to all six formats, calibrated on 32 random images."""
    keras.utils.set_random_seed(0)
    model = convforge.build_model("resnet18", num_classes=4, input_shape=SHAPE)
    out = tmp_path_factory.mktemp("resnet18") / "export"
    lines = []
    result = export(model, out, representative=_images(32), progress=lines.append, latency_runs=3)
    return model, out, result, lines


def test_all_six_formats_written_with_card_and_no_leftovers(resnet_export):
    _, out, result, lines = resnet_export
    files = {"saved_model", "model.tflite", "model_fp16.tflite", "model_dynamic.tflite", "model_int8.tflite",
             "model.onnx", "card.json", "card.md", "check_images.npy"}
    assert set(os.listdir(out)) == files
    # The default is every format any image model can take; tflite_postprocess_op is a detector's.
    assert [a["format"] for a in result["card"]["artifacts"]] == list(FORMATS)
    assert set(NAMES) - set(FORMATS) == {"tflite_postprocess_op"}
    assert len(lines) == 7 and "onnx" in lines[-2]


def test_fp32_artifacts_match_keras_in_their_own_runtimes(resnet_export):
    model, out, result, _ = resnet_export
    x = _images(3, seed=7)
    want = model(x, training=False).numpy()
    for fmt in ("saved_model", "tflite", "onnx"):
        run, _ = runner(fmt, result["paths"][fmt])
        got = run(x)
        assert list(got) == ["probabilities"], fmt
        assert _max_diff(got["probabilities"], want) <= 1e-4, fmt
    checks = {a["format"]: a["check"] for a in result["card"]["artifacts"]}
    for fmt in ("saved_model", "tflite", "onnx"):
        assert checks[fmt]["status"] == "passed" and checks[fmt]["max_abs_diff"] <= 1e-4


def test_quantized_artifacts_run_and_report_top1(resnet_export):
    model, out, result, _ = resnet_export
    x = _images(3, seed=8)
    want = {"probabilities": model(x, training=False).numpy()}
    for fmt in ("tflite_fp16", "tflite_dynamic", "tflite_int8"):
        run, info = runner(fmt, result["paths"][fmt])
        got = run(x)
        assert got["probabilities"].shape == (3, 4), fmt
        stats = compare_quantized(want, got)
        assert 0.0 <= stats["top1_agreement"] <= 1.0 and np.isfinite(stats["max_abs_diff"])
        check = next(a["check"] for a in result["card"]["artifacts"] if a["format"] == fmt)
        assert check["status"] == "reported" and 0.0 <= check["top1_agreement"] <= 1.0
        assert check["latency_ms"]["batch"] == 1 and check["latency_ms"]["threads"] == 1
    assert info["input_dtype"] == "int8"


def test_signatures_name_input_image_with_dynamic_batch(resnet_export):
    _, out, result, _ = resnet_export
    signature = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["image"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 32, 32, 3]
    assert list(signature.structured_outputs) == ["probabilities"]

    import onnx
    from ai_edge_litert.interpreter import Interpreter

    proto = onnx.load(str(out / "model.onnx"))
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in proto.opset_import)
    graph = proto.graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["probabilities"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    interpreter = Interpreter(model_path=str(out / "model_int8.tflite"))
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["image"], "outputs": ["probabilities"]}}


def test_card_hashes_sizes_and_versions_match_the_files(resnet_export):
    model, out, result, _ = resnet_export
    card = json.loads((out / "card.json").read_text())
    assert card == json.loads(json.dumps(result["card"]))
    for entry in card["artifacts"]:
        path = out / entry["file"]
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
            assert path.stat().st_size == entry["bytes"]
        else:
            assert sha256_path(path) == entry["sha256"]
    assert card["input"] == {"name": "image", "dtype": "float32", "shape": [None, 32, 32, 3], "layout": "NHWC",
                             "preprocessing": None, "served_preprocessing": None}
    assert card["outputs"] == [{"name": "probabilities", "dtype": "float32", "shape": [None, 4]}]
    for key in ("tensorflow", "keras", "tf2onnx", "onnxruntime", "litert"):
        assert card["versions"][key], key
    markdown = (out / "card.md").read_text()
    assert all(a["file"] in markdown for a in card["artifacts"])


def test_verify_dir_rechecks_and_detects_a_changed_file(resnet_export, tmp_path):
    model, out, _, _ = resnet_export
    reports = verify_dir(out, model)
    assert {r["status"] for r in reports.values()} == {"passed", "reported"}
    assert reports["model.onnx"]["max_abs_diff"] <= 1e-4

    # A folder with a subset of the artifacts; without a model, its first float32 artifact is the reference.
    copy = tmp_path / "copy"
    copy.mkdir()
    keep = ("model.onnx", "model_int8.tflite")
    for name in ("card.json",) + keep:
        (copy / name).write_bytes((out / name).read_bytes())
    card = json.loads((copy / "card.json").read_text())
    card["artifacts"] = [a for a in card["artifacts"] if a["file"] in keep]
    (copy / "card.json").write_text(json.dumps(card))
    reports = verify_dir(copy)
    assert reports["model.onnx"]["max_abs_diff"] == 0.0 and reports["model_int8.tflite"]["status"] == "reported"
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="SHA-256"):
        verify_dir(copy, model)


def test_second_architecture_all_formats(tmp_path):
    model = convforge.build_model("squeezenet1_1", num_classes=4, input_shape=SHAPE)
    result = export(model, tmp_path / "m", representative=_images(32), int8_io="uint8", progress=None,
                    latency_runs=2)
    checks = {a["format"]: a["check"] for a in result["card"]["artifacts"]}
    assert set(checks) == set(FORMATS)
    for fmt in ("saved_model", "tflite", "onnx"):
        assert checks[fmt]["max_abs_diff"] <= 1e-4, fmt
    for fmt in ("tflite_fp16", "tflite_dynamic", "tflite_int8"):
        assert checks[fmt]["output_shapes"] == {"probabilities": [4]}
    assert checks["tflite_int8"]["input_dtype"] == "uint8"


def _dict_model():
    """A tiny localizer: {'label': softmax over 3, 'box': 4 sigmoids}."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"label": keras.layers.Dense(3, activation="softmax")(x),
                                "box": keras.layers.Dense(4, activation="sigmoid")(x)})


def test_dict_outputs_keep_their_names_in_every_runtime(tmp_path):
    model = _dict_model()
    result = export(model, tmp_path / "d", formats=["saved_model", "tflite", "onnx"], progress=None, latency_runs=0)
    x = _images(2, seed=3)
    want = {k: v.numpy() for k, v in model(x, training=False).items()}
    for fmt in ("saved_model", "tflite", "onnx"):
        got = runner(fmt, result["paths"][fmt])[0](x)
        assert set(got) == {"label", "box"}, fmt
        for name in want:
            assert _max_diff(got[name], want[name]) <= 1e-4, (fmt, name)
    assert [o["name"] for o in result["card"]["outputs"]] == ["label", "box"]


def test_integer_and_several_outputs_are_named_and_verified_per_output(tmp_path):
    """Names come from the model (dict keys; the layer of a single non-softmax output), never from values; an
    integer output (class ids) stays an integer and must match exactly in every float32 format."""
    class ClassId(keras.layers.Layer):
        """The top class as int32 (tf.argmax: keras.ops.argmax adds a BitwiseAnd TFLite has no kernel for)."""

        def call(self, scores):
            return tf.argmax(scores, axis=-1, output_type=tf.int32)

        def compute_output_spec(self, scores):
            return keras.KerasTensor(scores.shape[:-1], dtype="int32")

    inputs = keras.Input(SHAPE)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs))
    probabilities = keras.layers.Dense(5, activation="softmax")(x)
    model = keras.Model(inputs, {"scores": probabilities, "class_id": ClassId()(probabilities),
                                 "offset": keras.layers.Dense(2, name="offset_head")(x)})
    result = export(model, tmp_path / "m", representative=_images(32), progress=None, latency_runs=0)
    kinds = result["card"]["verification"]["output_kinds"]
    assert {o["name"]: (kinds[o["name"]], o["dtype"]) for o in result["card"]["outputs"]} == {
        "scores": ("probabilities", "float32"), "class_id": ("integer", "int32"), "offset": ("values", "float32")}
    images = _images(8, seed=5)
    want = model(images, training=False)
    for fmt in FORMATS:
        check = next(a for a in result["card"]["artifacts"] if a["format"] == fmt)["check"]
        assert set(check["per_output"]) == {"scores", "class_id", "offset"}, fmt
        assert check["per_output"]["scores"]["top1_agreement"] is not None, fmt
        assert "agreement" in check["per_output"]["class_id"], fmt
        if fmt in ("saved_model", "tflite", "onnx"):
            assert check["per_output"]["class_id"]["agreement"] == 1.0, fmt
            got = runner(fmt, result["paths"][fmt])[0](images)
            np.testing.assert_array_equal(got["class_id"], np.asarray(want["class_id"]), err_msg=fmt)
    assert verify_dir(tmp_path / "m")["model.onnx"]["per_output"]["class_id"]["agreement"] == 1.0

    # A single output that is not a softmax is named by the layer that makes it.
    regressor = keras.Model(inputs, keras.layers.Dense(2, name="depth")(x))
    single = export(regressor, tmp_path / "s", formats=["onnx"], progress=None, latency_runs=0)
    assert single["card"]["outputs"] == [{"name": "depth", "dtype": "float32", "shape": [None, 2]}]


def test_output_names_rename_and_are_checked(tmp_path):
    model = _dict_model()
    result = export(model, tmp_path / "r", formats=["onnx"], output_names={"label": "scores"}, progress=None,
                    latency_runs=0)
    assert set(runner("onnx", result["paths"]["onnx"])[0](_images(1))) == {"scores", "box"}
    with pytest.raises(ExportError, match="output name"):
        export(model, tmp_path / "bad", formats=["onnx"], output_names={"label": "2nd"}, progress=None)


def test_with_preprocessing_serves_uint8_images_of_any_size(tmp_path):
    model = _dict_model()
    prep = {"resize": [32, 32], "channels": 3, "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225]}
    result = export(model, tmp_path / "p", formats=["saved_model", "tflite"], preprocessing=prep,
                    with_preprocessing=True, progress=None, latency_runs=0)
    signature = tf.saved_model.load(result["paths"]["saved_model"]).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["image"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]

    raw = np.random.default_rng(5).integers(0, 256, (2, 47, 61, 3), dtype=np.uint8)
    resized = tf.image.resize(raw.astype("float32"), (32, 32), method="bilinear").numpy()
    manual = ((np.clip(np.round(resized), 0, 255) / 255 - prep["mean"]) / prep["std"]).astype("float32")
    want = model(manual, training=False)
    got = signature(image=tf.constant(raw))
    for name in ("label", "box"):
        assert _max_diff(got[name], want[name]) <= 1e-4, name
    # TFLite keeps the normalized float32 input; the card says how to get there.
    assert runner("tflite", result["paths"]["tflite"])[0](manual)["label"].shape == (2, 3)
    card = result["card"]["input"]
    assert card["served_preprocessing"]["resize"] == [32, 32] and card["preprocessing"]["std"] == prep["std"]


class Erf(keras.layers.Layer):
    """The Gauss error function: a TF op with no TFLite builtin kernel."""

    def call(self, x):
        """erf(x), element-wise."""
        return keras.ops.erf(x)


def _erf_model():
    """Conv -> Erf -> pool -> softmax: TFLite needs Flex for Erf, tf2onnx maps it."""
    inputs = keras.Input((8, 8, 3))
    x = Erf()(keras.layers.Conv2D(4, 3)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_flex_op_fails_atomically_and_allow_flex_succeeds(tmp_path):
    model = _erf_model()
    out = tmp_path / "flex"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "model.onnx").write_bytes(b"an older export")
    before = _listing(out)
    with pytest.raises(ExportError, match=r"tflite: .*\bErf\b.*allow_flex=True"):
        export(model, out, formats=["saved_model", "onnx", "tflite"], progress=None)
    assert _listing(out) == before and (out / "model.onnx").read_bytes() == b"an older export"
    missing = tmp_path / "never"
    with pytest.raises(ExportError, match="Erf"):
        export(model, missing, formats=["tflite"], progress=None)
    assert not missing.exists()

    result = export(model, out, formats=["saved_model", "onnx", "tflite"], allow_flex=True, progress=None,
                    latency_runs=0)
    checks = {a["format"]: a["check"] for a in result["card"]["artifacts"]}
    assert checks["onnx"]["status"] == "passed" and checks["saved_model"]["status"] == "passed"
    # No pip runtime here links the Flex delegate, so the flex TFLite is written but reported unverified.
    assert checks["tflite"]["status"] == "unverified" and "Flex" in checks["tflite"]["reason"]
    assert sorted(os.listdir(out)) == ["card.json", "card.md", "check_images.npy", "keep.txt", "model.onnx",
                                       "model.tflite", "saved_model"]


def test_grouped_convolution_converts_to_tflite_and_onnx(tmp_path):
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, groups=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    result = export(model, tmp_path / "g", formats=["tflite", "onnx"], progress=None, latency_runs=0)
    x = _images(2, (16, 16, 8), seed=4)
    want = model(x, training=False).numpy()
    for fmt in ("tflite", "onnx"):
        assert _max_diff(runner(fmt, result["paths"][fmt])[0](x)["probabilities"], want) <= 1e-4, fmt


def test_bad_requests_are_one_sentence_errors(tmp_path):
    model = _dict_model()
    with pytest.raises(ExportError, match=r"'tflit'.*did you mean 'tflite'"):
        export(model, tmp_path / "a", formats=["tflit"], progress=None)
    with pytest.raises(ExportError, match="representative"):
        export(model, tmp_path / "b", formats=["tflite_int8"], progress=None)
    with pytest.raises(ExportError, match="representative has a batch of shape"):
        export(model, tmp_path / "c", formats=["tflite_int8"], representative=_images(2, (16, 16, 3)),
               progress=None)
    with pytest.raises(ExportError, match="with_preprocessing"):
        export(model, tmp_path / "d", formats=["saved_model"], with_preprocessing=True, progress=None)
    with pytest.raises(ExportError, match="tflite_postprocess_op replaces a detector's NonMaxSuppression layer"):
        export(model, tmp_path / "d", formats=["tflite_postprocess_op"], progress=None)
    # Importing convforge.export rebinds the attribute to the package, which stays callable as the function.
    with pytest.raises(ExportError, match="unknown"):
        convforge.export(model, tmp_path / "e", formats=["pdf"], progress=None)
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_compare_quantized_counts_top1_only_on_softmax_outputs():
    keras_out = {"label": np.array([[0.7, 0.3], [0.4, 0.6]]), "box": np.array([[0.1, 0.8], [0.5, 0.7]])}
    artifact = {"label": np.array([[0.6, 0.4], [0.55, 0.45]]), "box": np.array([[0.1, 0.7], [0.5, 0.7]])}
    stats = compare_quantized(keras_out, artifact)
    assert stats["top1_agreement"] == 0.5
    assert stats["per_output"]["box"]["top1_agreement"] is None
    assert stats["max_abs_diff"] == pytest.approx(0.15)
