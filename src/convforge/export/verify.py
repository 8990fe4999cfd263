"""Run each artifact in its own runtime and compare it with Keras (or with a float32 artifact).

Runtimes: TF SavedModel (`tf.saved_model.load` + `serving_default`), LiteRT (`ai_edge_litert` Interpreter with
its default op resolver, which applies the XNNPACK delegate), ONNX Runtime (CPU execution provider).
float32 artifacts must agree to max |Δ| <= tolerance; quantized ones are reported by top-1 agreement and
max |Δ| (`compare_quantized`), judged later by the task metric.
"""
import os

import numpy as np

from convforge.errors import ExportError
from convforge.export.formats import FORMATS, FP32_FORMATS, QUANTIZED_FORMATS
from convforge.export.saved_model import INPUT_NAME, flatten_outputs
from convforge.timing import median_ms

CHECK_SEED = 1234


class FlexUnavailable(ExportError):
    """A TFLite artifact that holds Select TF (Flex) ops, which no installed Python runtime can run."""


def named_outputs(outputs, names):
    """Return {name: float32 numpy array} for a model's outputs (tensor, list or dict) in name order."""
    return {name: np.asarray(y, dtype=np.float32) for name, y in zip(names, flatten_outputs(outputs))}


CHECK_FILE = "check_images.npy"


def check_images(shape, count=4, seed=CHECK_SEED):
    """Seeded standard-normal float32 images [count, H, W, C]: normalized inputs when none are given."""
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def saved_check_images(out_dir, card):
    """The check images an export kept (check_images.npy), else the card's seeded ones; raise ExportError for
    a file that is not a float array of the card's input shape (pickled objects are never loaded)."""
    shape = tuple(card["input"]["shape"][1:])
    path = os.path.join(out_dir, CHECK_FILE)
    if not os.path.exists(path):
        verification = card["verification"]
        return check_images(shape, verification.get("images", 4), verification.get("seed", CHECK_SEED))
    return load_images_npy(path, shape, "the check_images.npy convforge.export wrote")


def load_images_npy(path, shape, accepted):
    """Float32 images [N, H, W, C] from an .npy file, or ExportError naming the file and `accepted` (what the
    caller takes) for a file that is not a non-empty float array of that shape; pickled objects are never loaded."""
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ExportError(f"{path} is not a numpy array file ({str(error).splitlines()[0][:120]}); accepted: "
                          f"{accepted}") from None
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or images.dtype.kind != "f" or not len(images):
        raise ExportError(f"{path} holds {images.dtype} {images.shape}, not float images "
                          f"[N, {', '.join(map(str, shape))}]; accepted: {accepted}")
    return images.astype(np.float32)


def check_uint8_images(shape, count=4, seed=CHECK_SEED):
    """Seeded uint8 images at a size other than the model's, to exercise a served resize."""
    height, width, channels = shape
    size = (height + height // 2 + 1, width + width // 3 + 2, channels)
    return np.random.default_rng(seed).integers(0, 256, (count, *size), dtype=np.uint8)


def _saved_model_runner(path, threads):
    """Return (run, info) for a SavedModel's serving_default signature."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    spec = signature.structured_input_signature[1][INPUT_NAME]

    def run(images):
        """Call the signature on a batch."""
        out = signature(**{INPUT_NAME: tf.constant(images, dtype=spec.dtype)})
        return {k: v.numpy().astype(np.float32) for k, v in out.items()}

    # TF fixes its thread pools at start-up; say what it runs with rather than pretend to set it.
    intra = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return run, {"runtime": f"TensorFlow {tf.__version__} SavedModel", "threads": int(intra)}


def _tflite_runner(path, threads):
    """Return (run, info) for a .tflite file in the LiteRT Interpreter, (de)quantizing int8/uint8 I/O."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        if "Flex delegate" in str(error):
            raise FlexUnavailable(f"{os.path.basename(path)} holds Select TF (Flex) ops, and the installed "
                                  f"LiteRT runtime has no Flex delegate; accepted: run it where the Flex "
                                  f"delegate is linked (e.g. tensorflow-lite-select-tf-ops)") from None
        raise
    runner = interpreter.get_signature_runner("serving_default")
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    image = inputs[INPUT_NAME]
    shape = [None]
    # A graph with a batch-1 op (TFLite_Detection_PostProcess) has a fixed batch of 1: one image per call.
    one_at_a_time = int(image["shape_signature"][0]) == 1

    def run(images):
        """Resize (when the batch changes), quantize, invoke, dequantize."""
        if one_at_a_time and len(images) != 1:
            each = [run(images[i:i + 1]) for i in range(len(images))]
            return {name: np.concatenate([e[name] for e in each]) for name in each[0]}
        if shape[0] != images.shape:
            interpreter.resize_tensor_input(image["index"], list(images.shape))
            interpreter.allocate_tensors()
            shape[0] = images.shape
        interpreter.set_tensor(image["index"], _quantize(images, image))
        interpreter.invoke()
        return {name: _dequantize(interpreter.get_tensor(d["index"]), d) for name, d in outputs.items()}

    from importlib.metadata import version

    return run, {"runtime": f"LiteRT {version('ai-edge-litert')} Interpreter (default resolver, XNNPACK)",
                 "threads": threads, "input_dtype": np.dtype(image["dtype"]).name}


def _quantize(images, detail):
    """Map float images onto an integer input tensor with its scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return images.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values, detail):
    """Map an integer output tensor back to float32 with its scale and zero point."""
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    if not scale:
        return values.astype(np.float32)  # not quantized: an integer output (class ids, counts) as it is
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _onnx_runner(path, threads):
    """Return (run, info) for an .onnx file in an ONNX Runtime CPU session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(images):
        """One session run on a batch."""
        return dict(zip(names, session.run(names, {INPUT_NAME: images.astype(np.float32)})))

    return run, {"runtime": f"ONNX Runtime {ort.__version__} (CPUExecutionProvider)", "threads": threads}


def runner(fmt, path, threads=1):
    """Return (run, info): run(images) -> {output name: float32 array} for an artifact in its runtime."""
    if fmt == "saved_model":
        return _saved_model_runner(path, threads)
    if fmt.startswith("tflite"):
        return _tflite_runner(path, threads)
    if fmt == "onnx":
        return _onnx_runner(path, threads)
    raise ExportError(f"format {fmt!r} has no runtime to verify it in; accepted: saved_model, tflite*, onnx")


def max_abs_diff(reference, outputs, artifact="artifact"):
    """Return the largest |Δ| over all named outputs, or raise ExportError on a missing name or shape."""
    worst = 0.0
    for name, want in reference.items():
        if name not in outputs:
            raise ExportError(f"{artifact} has no output {name!r} (it has {sorted(outputs)}); accepted: the same "
                              f"output names as the Keras model")
        got = outputs[name]
        if got.shape != want.shape:
            raise ExportError(f"{artifact} output {name!r} has shape {got.shape}, Keras {want.shape}; accepted: "
                              f"the same shape")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0)
    return worst


def _rows_sum_to_one(array):
    """True for a rank-2 array whose rows are non-negative and sum to one (a softmax's output)."""
    array = np.asarray(array, dtype="float64")
    return (array.ndim == 2 and array.shape[1] > 1 and array.min() >= 0
            and np.allclose(array.sum(axis=1), 1.0, atol=1e-3))


def compare_quantized(keras_outputs, artifact_outputs, kinds=None):
    """Per output, how far an artifact's outputs are from Keras': max |Δ|, top-1 agreement of probabilities,
    the share of equal values of integer outputs (class ids, counts).

    Both arguments are an array or a {name: array} dict with the same names; kinds: {name: "probabilities",
    "integer" or "values"} (saved_model.output_kind; a missing name counts as "values"; None: told
    from the values, softmax-like rows counting as probabilities). Returns
    {"top1_agreement": float or None (no probabilities output), "max_abs_diff": float,
     "per_output": {name: {"max_abs_diff", "top1_agreement", and "agreement" for integer outputs}}};
    top1_agreement overall is that of the first probabilities output.
    """
    if not isinstance(keras_outputs, dict):
        keras_outputs, artifact_outputs = {"output": keras_outputs}, {"output": artifact_outputs}
        kinds = {"output": next(iter((kinds or {}).values()), "values")}
    if kinds is None:
        # A caller without the model's structure: rows that are non-negative and sum to one count as
        # probabilities (export always passes the kinds it read from the graph).
        kinds = {name: "probabilities" if _rows_sum_to_one(value) else "values"
                 for name, value in keras_outputs.items()}
    per_output, top1 = {}, None
    for name, want in keras_outputs.items():
        if name not in artifact_outputs:
            raise ExportError(f"quantized artifact has no output {name!r} (it has {sorted(artifact_outputs)}); "
                              f"accepted: the same output names as the Keras model")
        want = np.asarray(want, dtype=np.float32)
        got = np.asarray(artifact_outputs[name], dtype=np.float32)
        if got.shape != want.shape:
            raise ExportError(f"quantized output {name!r} has shape {got.shape}, Keras {want.shape}; accepted: "
                              f"the same shape")
        entry = {"max_abs_diff": float(np.max(np.abs(got - want))) if want.size else 0.0, "top1_agreement": None}
        kind = kinds.get(name, "values")
        if kind == "probabilities" and want.ndim >= 2:
            entry["top1_agreement"] = float(np.mean(got.argmax(-1) == want.argmax(-1)))
            top1 = entry["top1_agreement"] if top1 is None else top1
        elif kind == "integer":
            entry["agreement"] = float(np.mean(got == want)) if want.size else 1.0
        per_output[name] = entry
    worst = max((e["max_abs_diff"] for e in per_output.values()), default=0.0)
    return {"top1_agreement": top1, "max_abs_diff": worst, "per_output": per_output}


# Latency of an artifact: the median of timed batch-1 calls after a warm-up.
latency_ms = median_ms


def check_artifact(fmt, path, images, reference, tolerance=1e-4, threads=1, latency_runs=10, loaded=None,
                   trained_reference=None, kinds=None):
    """Run one artifact on `images`, compare with `reference` outputs, time it at batch 1; return the report.

    float32 formats raise ExportError when max |Δ| exceeds `tolerance`. A TFLite file with Flex ops is
    reported as unverified: no installed Python runtime links the Flex delegate. `loaded`: the (run, info)
    runner() already returned for this artifact, so a caller that runs it again does not load it twice.
    `trained_reference`: outputs of the mixed-precision model `reference` is the float32 copy of; its max |Δ|
    is reported as `max_abs_diff_vs_trained` and judged by nothing here (the task metric judges it).
    """
    # The user's name for the artifact, not a staging folder's (the SavedModel is staged as core_saved_model).
    name = FORMATS[fmt].file if fmt in FORMATS else os.path.basename(os.path.normpath(path))
    try:
        run, info = loaded or runner(fmt, path, threads)
    except FlexUnavailable as error:
        return {"status": "unverified", "reason": str(error)}
    outputs = run(images)
    report = {"status": "passed", **info, "images": int(len(images))}
    max_abs_diff(reference, outputs, name)  # every output present, with its shape
    stats = compare_quantized(reference, outputs, kinds)
    report.update(max_abs_diff=stats["max_abs_diff"], top1_agreement=stats["top1_agreement"],
                  per_output=stats["per_output"])
    if fmt in QUANTIZED_FORMATS:
        report["status"] = "reported"
    else:
        for output, entry in stats["per_output"].items():
            # Integer outputs (class ids, counts) must come out equal; float ones within the tolerance.
            if entry.get("agreement", 1.0) < 1.0 or entry["max_abs_diff"] > tolerance:
                raise ExportError(f"{name} differs from Keras by max |Δ| {entry['max_abs_diff']:.3g} in output "
                                  f"{output!r}, over max_abs_diff={tolerance:g}; accepted: a conversion within the "
                                  f"tolerance (or a larger max_abs_diff)")
    if trained_reference is not None:
        report["max_abs_diff_vs_trained"] = max_abs_diff(trained_reference, outputs, name)
    report["output_shapes"] = {k: list(v.shape[1:]) for k, v in outputs.items()}
    if latency_runs:
        report["latency_ms"] = {"median": round(latency_ms(run, images[:1], latency_runs), 3), "batch": 1,
                                "runs": latency_runs, "threads": info["threads"]}
    return report


def verify_dir(out_dir, model=None, threads=1):
    """Re-verify an export folder from its card.json: hashes, then each artifact against a reference.

    The reference is `model` (Keras; its float32 copy when it computes in mixed precision) when given, else the
    float32 SavedModel (without served preprocessing),
    model.tflite or model.onnx, whichever the folder has first. Inputs are the card's seeded check images.
    Returns {file: report}; raises ExportError on a changed file or a float32 artifact over tolerance.
    """
    from convforge.export.card import read_card, sha256_path
    from convforge.preprocessing import preprocess

    card = read_card(out_dir)
    shape = tuple(card["input"]["shape"][1:])
    tolerance = card["verification"]["max_abs_diff"]
    names = [o["name"] for o in card["outputs"]]
    kinds = card["verification"].get("output_kinds") or {}
    served = card["input"].get("served_preprocessing")
    images = saved_check_images(out_dir, card)
    raw = check_uint8_images(shape, len(images)) if served else None
    artifacts = card["artifacts"]
    for entry in artifacts:
        path = os.path.join(out_dir, entry["file"])
        if not os.path.exists(path):
            raise ExportError(f"{entry['file']} is listed in {out_dir}/card.json but missing; accepted: an export "
                              f"folder as convforge.export wrote it")
        if sha256_path(path) != entry["sha256"]:
            raise ExportError(f"{entry['file']} does not match the SHA-256 in its card; accepted: the file as "
                              f"exported (export again to refresh the card)")

    if model is not None:
        from convforge.precision import float32_copy

        model = float32_copy(model)  # the export's reference: a mixed-precision model's float32 copy

        def reference(x):
            """Keras outputs by name."""
            return named_outputs(model(x, training=False), names)
    else:
        float_entries = [e for e in artifacts if e["format"] in FP32_FORMATS and
                         not (e["format"] == "saved_model" and served)]
        if not float_entries:
            reference = None
        else:
            ref_run, _ = runner(float_entries[0]["format"], os.path.join(out_dir, float_entries[0]["file"]), threads)
            reference = ref_run

    reports = {}
    for entry in artifacts:
        path = os.path.join(out_dir, entry["file"])
        with_raw = entry["format"] == "saved_model" and served
        x = raw if with_raw else images
        if reference is None:
            run, info = runner(entry["format"], path, threads)
            outputs = run(x)
            reports[entry["file"]] = {"status": "ran", **info, "output_shapes": {k: list(v.shape[1:])
                                                                                 for k, v in outputs.items()}}
            continue
        ref_in = preprocess(raw, served).numpy() if with_raw else images
        reports[entry["file"]] = check_artifact(entry["format"], path, x, reference(ref_in), tolerance, threads,
                                                latency_runs=0, kinds=kinds)
    return reports
