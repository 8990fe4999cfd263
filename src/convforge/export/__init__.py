"""Export any Keras image model to SavedModel, TFLite (fp32, fp16, dynamic int8, full int8) and ONNX, verified.

Every artifact is converted into a hidden staging folder inside `out_dir`, run back in its own runtime and
compared with Keras; only when all of them pass are they renamed into place, with `card.json` / `card.md`
last. A failure leaves `out_dir` as it was and raises ExportError.

Examples:
    >>> import convforge
    >>> model = convforge.build_model("resnet18", num_classes=4, input_shape=(32, 32, 3))
    >>> result = convforge.export(model, "saved_models/demo", formats=["saved_model", "tflite", "onnx"],
    ...                           progress=None)
    >>> sorted(a["file"] for a in result["card"]["artifacts"])
    ['model.onnx', 'model.tflite', 'saved_model']
    >>> convforge.export.verify_dir("saved_models/demo", model)["model.onnx"]["status"]
    'passed'
"""
import datetime
import errno
import hashlib
import os
import shutil
import tempfile

import numpy as np

from convforge._api import callable_package
from convforge.cpu import describe_machine
from convforge.errors import ExportError
from convforge.numbers import metric as metric_text
from convforge.export.card import CARD_JSON, CARD_MD, sha256_path, size_bytes, versions, write_card
from convforge.export.judge import (DEFAULT_MAX_DROP, judge, keras_scorer, score,
                                    validation_batches)
from convforge.export.config import ExportConfig
from convforge.export.detection_postprocess import apply_nms
from convforge.export.saved_model import (INPUT_NAME, input_spec, output_kinds, resolve_output_names,
                                          serving_function, write_saved_model)
from convforge.preprocessing import check as check_preprocessing, preprocess
from convforge.export.formats import FORMATS as TABLE
from convforge.export.formats import DEFAULT_FORMATS, FP32_FORMATS, QUANTIZED_FORMATS, TFLITE_FORMATS
from convforge.export.verify import (CHECK_FILE, CHECK_SEED, FlexUnavailable,
                                     check_artifact, check_images, check_uint8_images, compare_quantized,
                                     named_outputs, runner, verify_dir)
from convforge.precision import float32_copy, model_precision

# The formats any image model can be exported to (export's default); NAMES adds the detector-only ones.
FORMATS = DEFAULT_FORMATS
ARTIFACTS = {name: row.file for name, row in TABLE.items()}
# A write that failed for the disk's sake, not the model's: the message names the disk.
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# Calibration gains little past a few hundred images, and they are held in memory.
MAX_REPRESENTATIVE = 500
CHECK_IMAGES = 4

__all__ = ["export", "verify_dir", "compare_quantized", "weights_sha256", "apply_nms", "FORMATS", "ARTIFACTS"]


def export(model, out_dir, formats=FORMATS, *, representative=None, preprocessing=None, with_preprocessing=False,
           output_names=None, allow_flex=False, opset=17, verify=True, max_abs_diff=1e-4, inputs_for_check=None,
           progress=print, int8_io="int8", latency_runs=10, threads=1, source=None, validation=None,
           metric=None, metric_name="accuracy", higher_is_better=True, max_metric_drop=None, fail_on_drop=True,
           validation_size=1000, labels=None, nms="graph"):
    """Write each of `formats` for a Keras image model into out_dir, verified, with a model card; all or nothing.

    Args:
        model: a built keras.Model with one float32 NHWC input (H, W, C static) and one output, a list or a dict,
            under any precision policy: a mixed_bfloat16 / mixed_float16 model is exported as its float32
            copy (same weights), verified against that copy, and its difference from the model as trained
            (max |Δ| on the check images, the metric on val) is recorded in the card's `precision`.
        out_dir: folder to write into (created when missing).
        formats: any of "saved_model", "tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx" (the
            default: all six), and for a detector "tflite_postprocess_op" (NMS by TFLite's own op, batch 1).
        representative: float32 batches (array [N, H, W, C] or an iterable of batches / (images, targets)
            pairs) normalized like the training data; calibrates tflite_int8 (at most 500 images are used).
        preprocessing: {"resize": [H, W], "channels": C, "scale": 1/255, "mean": [...], "std": [...]} as
            `convforge.data.preprocessing` returns it; recorded in the card.
        with_preprocessing: bake `preprocessing` into the SavedModel: its `image` becomes uint8 of any size.
        output_names: one name per output (a list), or {key: name} for dict outputs; default: the dict keys,
            `probabilities` for one softmax output, else `output` / `output_<i>`.
        allow_flex: let TFLite fall back to Select TF ops; without it such a model raises ExportError.
        opset: ONNX opset. verify: run every artifact back and compare (float32 to max_abs_diff).
        inputs_for_check: float32 batch to compare on (default: 4 representative or seeded random images).
        progress: callable taking one line per step (None: silent).
        int8_io: "int8" or "uint8" input/output of tflite_int8.
        latency_runs, threads: median of latency_runs batch-1 runs, with `threads` runtime threads.
        validation: (images, targets) batches of the val split, normalized like `representative`; every
            artifact is then scored on them by `metric` and quantized ones are judged by their drop.
        metric: metric(predict, batches) -> float in [0, 1], where predict(images) returns outputs in the
            Keras model's structure; default: top-1 accuracy of the first softmax output.
        metric_name: what `metric` measures, for the card ("accuracy", "accuracy_at_iou50", ...).
        higher_is_better: False for a metric that falls as the model improves (NME): a drop is then a rise.
        max_metric_drop: {format: points} a quantized format may lose against Keras (default: fp16 0.5,
            dynamic 1, int8 1; "float32_copy": 1, what the float32 copy of a mixed-precision model may lose
            against the model as trained). fail_on_drop: a larger drop raises ExportError; False records it in the card.
        validation_size: at most this many validation images are used.
        labels: the class names, in output index order; kept in the card so a client can name predictions.
        nms: "graph" (a detector's NMS inside every artifact) or "python": for a runtime or format that cannot
            hold NMS's ops, the artifacts end before it (outputs `boxes` (B, A, 4) and `scores` (B, A, K), the
            decoded candidates) and `apply_nms(outputs, card)` runs the detector's own NMS layer in Python.
        source: where the model came from, e.g. {"model_path": "runs/x/model.keras", "recipe": "x"}; kept
            in the card as `source` (None when not given), so `convforge bench` can find the Keras model.

    Returns:
        {"out_dir": path, "paths": {format: path}, "card": the card dict written to card.json}
    """
    config = ExportConfig(
        formats=formats, representative=representative, preprocessing=preprocessing,
        with_preprocessing=with_preprocessing, output_names=output_names, allow_flex=allow_flex, opset=opset,
        verify=verify, max_abs_diff=max_abs_diff, inputs_for_check=inputs_for_check, progress=progress,
        int8_io=int8_io, latency_runs=latency_runs, threads=threads, source=source, validation=validation,
        metric=metric, metric_name=metric_name, higher_is_better=higher_is_better, max_metric_drop=max_metric_drop,
        fail_on_drop=fail_on_drop, validation_size=validation_size, labels=labels, nms=nms)
    return export_with(model, out_dir, config)


def refuse_unexportable(model):
    """Raise ExportError when a layer of the model says it cannot live in a graph artifact (its `export_refusal`,
    e.g. a Python callback: the artifact would pass verification in this process and fail in any other)."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", ()))
        reason = getattr(layer, "export_refusal", None)
        if reason:
            raise ExportError(f"{model.name} cannot be exported: layer {layer.name!r} {reason}")


def export_with(model, out_dir, config):
    """`export` with its options as one ExportConfig."""
    say = config.say
    shape = input_spec(model)
    refuse_unexportable(model)
    # Artifacts hold float32 graphs whatever the model was trained in: bf16/fp16 ops are neither TFLite
    # builtins nor fast on most targets. The copy is the reference every artifact is verified against.
    trained, trained_precision = model, model_precision(model)
    model = float32_copy(model)
    if trained is not model:
        say(f"export: the model computes in {trained_precision}; exporting its float32 copy (same weights)")
    detector = python_nms = trained_detector = None
    if config.nms == "python":
        from convforge.export.detection_postprocess import pre_nms_model

        if "tflite_postprocess_op" in config.formats:
            raise ExportError("tflite_postprocess_op holds NMS in its graph and nms='python' leaves NMS out of every "
                              "artifact; accepted: one or the other")
        # Artifacts end before NMS; the metric still judges detections, with NMS run in Python on their outputs.
        detector, trained_detector = model, trained
        model, python_nms = pre_nms_model(model)
        trained = model if trained_detector is detector else pre_nms_model(trained_detector)[0]
        say("export: NMS left out of the artifacts (nms='python'): they output the decoded candidates")
    spec = None if config.preprocessing is None else check_preprocessing(config.preprocessing, shape[2])
    if spec is not None and spec["resize"] != list(shape[:2]):
        raise ExportError(f"preprocessing resize {spec['resize']} differs from the model input {list(shape[:2])}; "
                          f"accepted: resize equal to the model's [H, W]")
    if config.with_preprocessing and spec is None:
        raise ExportError("with_preprocessing=True needs preprocessing={'resize': [H, W], 'channels': C, "
                          "'scale': ..., 'mean': [...], 'std': [...]}; accepted: both, or neither")
    calibration = (None if config.representative is None
                   else _images(config.representative, shape, "representative", MAX_REPRESENTATIVE))
    if "tflite_int8" in config.formats and calibration is None:
        raise ExportError("tflite_int8 needs calibration images; accepted: representative= float32 input batches "
                          "normalized like the training data (e.g. 200 validation images)")
    if config.inputs_for_check is not None:
        check, check_from = _images(config.inputs_for_check, shape, "inputs_for_check"), "given"
    elif calibration is not None:
        check, check_from = calibration[:CHECK_IMAGES], "representative"
    else:
        check, check_from = check_images(shape, CHECK_IMAGES), "random normal"
    keras_outputs = model(check, training=False)
    names = resolve_output_names(model, keras_outputs, config.output_names)
    kinds = output_kinds(model, keras_outputs, names)
    reference = named_outputs(keras_outputs, names)
    trained_reference = None if trained is model else named_outputs(trained(check, training=False), names)
    precision = {"trained": trained_precision, "exported": "float32"}
    if trained_reference is not None:
        stats = compare_quantized(trained_reference, reference, kinds)
        precision["float32_copy_vs_trained"] = {"max_abs_diff": stats["max_abs_diff"],
                                                "top1_agreement": stats["top1_agreement"], "images": len(check)}
    serve = serving_function(model, names)
    scoring = None
    if config.validation is not None:
        batches = validation_batches(config.validation, shape, config.validation_size)
        judged = _judged_outputs(model, names, kinds, keras_outputs, detector, python_nms, check)
        reference_value, reference_all = score(keras_scorer(detector or model, judged.names), judged.names,
                                               judged.template, batches, config.metric)
        drops = {**DEFAULT_MAX_DROP, **(config.max_metric_drop or {})}
        scoring = (batches, config.metric, reference_value, reference_all, drops, judged)
        count = sum(len(b[0]) for b in batches)
        better = config.higher_is_better
        say(f"export: Keras {config.metric_name} {metric_text(reference_value, better)} on {count} val images")
        if trained_reference is not None:
            # The float32 copy is judged against the model as trained, by the task metric.
            trained_value, trained_all = score(keras_scorer(trained_detector if detector else trained, judged.names),
                                               judged.names, judged.template, batches, config.metric)
            result = judge(reference_value, reference_all, trained_value, trained_all, config.metric_name,
                           drops.get("float32_copy"), count, judged.kinds, config.higher_is_better)
            precision["float32_copy_vs_trained"]["metric"] = result
            say(f"export: Keras {trained_precision} {config.metric_name} {metric_text(trained_value, better)}, "
                f"float32 copy {metric_text(reference_value, better)}")
            if result.get("status") == "failed":
                precision["float32_copy_vs_trained"]["warning"] = _over_threshold(
                    f"float32 copy: {config.metric_name} {metric_text(reference_value, better)} against "
                    f"{metric_text(trained_value, better)} of the "
                    f"{trained_precision} model loses {result['drop_points']:.2f} points, over the allowed "
                    f"{result['max_drop_points']:g}; accepted: a model whose float32 copy keeps its metric "
                    f"(or --no-verify-fail to export it anyway, marked in the card)", config.fail_on_drop)

    out_dir = os.path.abspath(str(out_dir))
    created = not os.path.exists(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".convforge-export-", dir=out_dir)
    except OSError as error:
        if created and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise ExportError(f"cannot write into {out_dir} ({error.strerror}); accepted: a folder path that is not "
                          f"a file and that this user can write") from None
    try:
        card_entries, staged = [], {}
        core = os.path.join(staging, "core_saved_model")
        if any(f.startswith("tflite") for f in config.formats) or (
                "saved_model" in config.formats and not config.with_preprocessing):
            _step("saved_model", lambda: write_saved_model(model, serve, core))
        for fmt in config.formats:
            path = _produce(fmt, model, names, spec if config.with_preprocessing else None, serve, core, staging,
                            calibration, config)
            staged[fmt] = path
            entry = {"format": fmt, "file": ARTIFACTS[fmt], "bytes": size_bytes(path), "sha256": sha256_path(path),
                     "precision": TABLE[fmt].precision}
            if fmt == "tflite_int8":
                from convforge.export.tflite import float_op_types

                entry["io_dtype"] = config.int8_io
                with open(path, "rb") as f:
                    # What full-integer quantization could not reach (no int8 kernel, or kept on purpose).
                    entry["float_ops"] = float_op_types(f.read())
            scored = scoring is not None and not (fmt == "saved_model" and config.with_preprocessing)
            loaded = _step(fmt, lambda: _load(fmt, path, config.threads)) if (config.verify or scored) else None
            if config.verify:
                if fmt == "saved_model" and config.with_preprocessing:
                    raw = check_uint8_images(shape, len(check))
                    expected = named_outputs(model(preprocess(raw, spec), training=False), names)
                    entry["check"] = _step(fmt, lambda: check_artifact(
                        fmt, path, raw, expected, config.max_abs_diff, config.threads, config.latency_runs, loaded,
                        kinds=kinds))
                else:
                    entry["check"] = _step(fmt, lambda: check_artifact(
                        fmt, path, check, reference, config.max_abs_diff, config.threads, config.latency_runs, loaded,
                        trained_reference, kinds=kinds))
            else:
                entry["check"] = {"status": "not verified"}
            if scored and loaded is not None:
                _score_artifact(fmt, loaded[0], entry, scoring, config)
            card_entries.append(entry)
            say(_summary(entry))
        card = _card(model, config, shape=shape, spec=spec, names=names, kinds=kinds, reference=reference,
                     entries=card_entries, check_from=check_from, n_check=len(check), calibration=calibration,
                     precision=precision)
        if python_nms is not None:
            from convforge.export.detection_postprocess import nms_record

            card["postprocess"] = {"nms": nms_record(python_nms, names)}
        write_card(staging, card)
        # The exact check images travel with the artifacts, so `convforge verify` later repeats this very check
        # (random inputs would push an int8 model outside its calibrated range and prove nothing).
        np.save(os.path.join(staging, CHECK_FILE), check)
        moves = [(staged[f], ARTIFACTS[f]) for f in config.formats]
        moves += [(os.path.join(staging, CHECK_FILE), CHECK_FILE)]
        moves += [(os.path.join(staging, CARD_JSON), CARD_JSON), (os.path.join(staging, CARD_MD), CARD_MD)]
        _commit(staging, out_dir, moves)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
        if isinstance(error, OSError) and error.errno in _DISK_ERRORS:
            raise ExportError(f"cannot write into {out_dir} ({error.strerror}); accepted: an output folder with "
                              f"free space that this user can write") from error
        raise
    shutil.rmtree(staging, ignore_errors=True)
    say(f"export: {len(config.formats)} artifact(s) and the card in {out_dir}")
    return {"out_dir": out_dir, "paths": {f: os.path.join(out_dir, ARTIFACTS[f]) for f in config.formats}, "card": card}


def _images(source, shape, what, limit=None):
    """Collect float32 images [N, H, W, C] from an array, a tensor or an iterable of batches or pairs."""
    def as_batch(item):
        """One float32 batch [n, H, W, C] from an array, a pair or a dict."""
        if isinstance(item, (tuple, list)) and len(item) and not np.isscalar(item[0]):
            item = item[0]  # (images, targets) from a tf.data pipeline
        if isinstance(item, dict):
            item = item.get(INPUT_NAME, next(iter(item.values())))
        array = np.asarray(item, dtype=np.float32)
        return array[None] if array.ndim == 3 else array

    if callable(source):
        source = source()  # a TFLite-style representative_dataset generator function
    if hasattr(source, "shape") and len(getattr(source, "shape")) in (3, 4):
        batches = [as_batch(source)]
    else:
        batches, count = [], 0
        for item in source:
            batch = as_batch(item)
            batches.append(batch)
            count += len(batch)
            if limit is not None and count >= limit:
                break
    if not batches:
        raise ExportError(f"{what} holds no images; accepted: float32 batches [N, {', '.join(map(str, shape))}]")
    for batch in batches:
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(shape):
            raise ExportError(f"{what} has a batch of shape {tuple(batch.shape)}; accepted: float32 batches "
                              f"[N, {', '.join(map(str, shape))}] like the model input")
    images = np.concatenate(batches)
    return images[:limit] if limit is not None else images


def _step(fmt, fn):
    """Run one conversion or check, turning an unexpected failure into an ExportError about that format."""
    try:
        return fn()
    except ExportError:
        raise
    except OSError as error:
        if error.errno in _DISK_ERRORS:
            raise ExportError(f"{fmt}: cannot write the artifact ({error.strerror}); accepted: an output folder "
                              f"with free space that this user can write") from error
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise ExportError(f"{fmt}: {type(error).__name__}: {first[:300]}; accepted: a model this format's "
                          f"converter and runtime can hold") from error
    except Exception as error:
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise ExportError(f"{fmt}: {type(error).__name__}: {first[:300]}; accepted: a model this format's "
                          f"converter and runtime can hold") from error


def float_ops_under_int8(model):
    """The TFLite op types a model's layers need kept in float32 under full-integer quantization (each layer's
    `float_ops_under_int8`, e.g. NMS's division)."""
    return tuple(sorted({op for layer in model._flatten_layers() for op in getattr(layer, "float_ops_under_int8", ())}))


def _produce(fmt, model, names, served_spec, serve, core, staging, calibration, config):
    """Write one artifact into the staging folder and return its path there."""
    path = os.path.join(staging, ARTIFACTS[fmt])
    if fmt == "saved_model":
        if served_spec is None:
            return core  # the SavedModel the TFLite converters read is this artifact; renamed at commit
        return _step(fmt, lambda: write_saved_model(model, serving_function(model, names, served_spec), path))
    if fmt == "tflite_postprocess_op":
        from convforge.export import detection_postprocess
        from convforge.export.tflite import convert_tflite

        staged = os.path.join(staging, "postprocess_saved_model")
        _step(fmt, lambda: write_saved_model(model, detection_postprocess.serving_function(model, names), staged))
        data = _step(fmt, lambda: convert_tflite(staged, fmt, custom_ops=(detection_postprocess.OP_NAME,)))
    elif fmt in TFLITE_FORMATS:
        from convforge.export.tflite import convert_tflite

        data = _offering_python_nms(model, lambda: _step(fmt, lambda: convert_tflite(
            core, fmt, calibration, config.allow_flex, config.int8_io, float_ops_under_int8(model))))
    else:
        from convforge.export.onnx import convert_onnx

        data = _offering_python_nms(model, lambda: _step(fmt, lambda: convert_onnx(serve, config.opset)))
        data = data.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    return path


def _offering_python_nms(model, convert):
    """Run a conversion; when a detector's graph fails to convert, the error also offers nms='python'."""
    try:
        return convert()
    except ExportError as error:
        from convforge.export.detection_postprocess import nms_layers

        if not nms_layers(model):
            raise
        raise ExportError(f"{error}; or, for this detector, nms='python' (CLI: convforge export --nms python): "
                          f"the artifacts end before NMS, and convforge.export.apply_nms(outputs, card) runs the "
                          f"detector's own NMS on their outputs in Python") from None


def _load(fmt, path, threads):
    """(run, info) of an artifact in its runtime, or None for a TFLite file no installed runtime can run."""
    try:
        return runner(fmt, path, threads)
    except FlexUnavailable:
        return None


class _Judged:
    """What the validation metric sees of a model: its outputs' names, kinds and structure, and how an artifact's
    outputs become them (NMS in Python for an nms='python' export, else as they are)."""

    def __init__(self, names, kinds, template, finish):
        self.names, self.kinds, self.template, self.finish = names, kinds, template, finish


def _judged_outputs(model, names, kinds, outputs, detector, python_nms, check):
    """The _Judged of an export: the exported model's own outputs, or the detector's when NMS runs in Python."""
    if detector is None:
        return _Judged(names, kinds, outputs, lambda run: run)
    full = detector(check, training=False)
    full_names = resolve_output_names(detector, full)

    def finish(run):
        """An artifact's run with the detector's NMS applied to its outputs, named like the detector's."""
        def with_nms(images):
            """Detections of one batch: the artifact, then NMS in Python."""
            out = run(images)
            result = python_nms(out[names[0]], out[names[1]])
            return named_outputs(result, full_names)
        return with_nms

    return _Judged(full_names, output_kinds(detector, full, full_names), full, finish)


def _score_artifact(fmt, run, entry, scoring, config):
    """Score one artifact on the validation batches; a quantized one over its allowed drop fails the export."""
    batches, metric, reference_value, reference_all, drops, judged = scoring
    metric_name, fail_on_drop = config.metric_name, config.fail_on_drop
    value, outputs = _step(fmt, lambda: score(judged.finish(run), judged.names, judged.template, batches, metric))
    allowed = drops.get(fmt) if fmt in QUANTIZED_FORMATS else None
    result = judge(value, outputs, reference_value, reference_all, metric_name, allowed,
                   sum(len(b[0]) for b in batches), judged.kinds, config.higher_is_better)
    entry["check"]["metric"] = result
    if result.get("status") == "failed":
        entry["check"]["warning"] = _over_threshold(
            f"{fmt}: {metric_name} {metric_text(value, config.higher_is_better)} against Keras "
            f"{metric_text(reference_value, config.higher_is_better)} on {result['images']} val "
            f"images loses {result['drop_points']:.2f} points, over the allowed {allowed:g}; accepted: a drop "
            f"within the recipe's export threshold for this format (or --no-verify-fail to keep it, marked failed "
            f"in the card)", fail_on_drop)
        entry["check"]["status"] = "metric drop over threshold"


def _over_threshold(message, fail_on_drop):
    """A metric drop over its threshold: raise ExportError with `message`, or return it to be kept in the card."""
    if fail_on_drop:
        raise ExportError(message)
    return message


def _summary(entry):
    """One progress line for an exported artifact."""
    check = entry["check"]
    parts = [f"{entry['bytes'] / 1024:.0f} KiB"]
    if check.get("max_abs_diff") is not None:
        parts.append(f"max |Δ| {check['max_abs_diff']:.2g}")
    if check.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {check['top1_agreement']:.0%}")
    if check.get("metric"):
        m = check["metric"]
        better = m.get("higher_is_better", True)
        parts.append(f"val {m['name']} {metric_text(m['value'], better)} (Keras {metric_text(m['keras'], better)}, "
                     f"drop {m['drop_points']:.2f} pt)")
    if check.get("latency_ms"):
        parts.append(f"{check['latency_ms']['median']:.3g} ms")
    if entry.get("float_ops"):
        parts.append(f"left in float32: {', '.join(entry['float_ops'])}")
    parts.append(check["status"])
    return f"export: {entry['format']} -> {entry['file']} ({', '.join(parts)})"


def _card(model, config, *, shape, spec, names, kinds, reference, entries, check_from, n_check, calibration,
          precision):
    """The card dict: what goes in, what comes out, each artifact and how it was checked, and with what."""
    from convforge import __version__

    return {
        "model": {"name": model.name, "class": type(model).__name__, "params": int(model.count_params()),
                  "weights_sha256": weights_sha256(model)},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "convforge": __version__,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *shape], "layout": "NHWC",
                  "preprocessing": spec, "served_preprocessing": spec if config.with_preprocessing else None},
        "outputs": [{"name": n, "dtype": "int32" if kinds[n] == "integer" else "float32",
                     "shape": [None, *reference[n].shape[1:]]} for n in names],
        "labels": list(config.labels) if config.labels else None,
        "precision": precision or {"trained": "float32", "exported": "float32"},
        "artifacts": entries,
        "verification": {"max_abs_diff": config.max_abs_diff, "output_kinds": kinds, "inputs": check_from,
                         "images": n_check,
                         "seed": CHECK_SEED, "latency_runs": config.latency_runs, "threads": config.threads,
                         "float32_formats": [e["format"] for e in entries if e["format"] in FP32_FORMATS]},
        "options": {"opset": config.opset, "allow_flex": config.allow_flex, "int8_io": config.int8_io,
                    "representative_images": 0 if calibration is None else int(len(calibration))},
        "source": dict(config.source) if config.source else None,
        "versions": versions(),
        "machine": describe_machine(),
    }


def weights_sha256(model):
    """SHA-256 over every weight array (name, dtype, shape, bytes): the same weights give the same hash however
    the model file was written."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{variable.path}|{value.dtype}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _remove(path):
    """Delete a file or a folder."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _commit(staging, out_dir, moves):
    """Rename staged artifacts into out_dir; on any failure put back what was there before."""
    backup = os.path.join(staging, ".replaced")
    os.makedirs(backup, exist_ok=True)
    done = []
    try:
        for source, name in moves:
            target = os.path.join(out_dir, name)
            replaced = os.path.lexists(target)
            if replaced:
                os.replace(target, os.path.join(backup, name))
            done.append((name, replaced))
            os.replace(source, target)
    except BaseException:
        for name, replaced in reversed(done):
            target = os.path.join(out_dir, name)
            if os.path.lexists(target):
                _remove(target)
            if replaced:
                os.replace(os.path.join(backup, name), target)
        raise


# Importing any submodule rebinds `convforge.export` to this package, so `convforge.export(model, ...)` must
# work on the package as well as on the function.
callable_package(__name__, "export")
