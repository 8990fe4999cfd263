"""Latency and throughput of every artifact in an export folder, next to the Keras model it came from.

Each artifact runs in the runtime `convforge verify` uses (`convforge.export.verify.runner`): TensorFlow for
the SavedModel, the LiteRT Interpreter (XNNPACK) for .tflite files, ONNX Runtime (CPU) for .onnx. Inputs are
the export's own check images (check_images.npy), so an int8 model runs inside its calibrated range. Per
artifact: `warmup` calls, then the median and 90th percentile of `runs` batch-1 calls (stopping early after
`max_seconds`), and images/s at batch `batch` (from the median of `batch_runs` batch calls). All runtimes are
loaded first and timed in turns, one call each per round, so load from other processes hits every format
alike. The Keras model is called through one `tf.function` (graph mode, no XLA), or `predict_on_batch` if
asked; never eagerly.

Examples:
    >>> from convforge.bench.export_speed import bench_dir, render_markdown
    >>> result = bench_dir("saved_models/demo", model="runs/demo/model.keras", runs=20, batch=8)
    >>> print(render_markdown(result))  # doctest: +SKIP
"""
import datetime
import json
import os

import numpy as np

from convforge.atomic import write_text
from convforge.cpu import cpu_features, describe_machine
from convforge.errors import ConvforgeError, ExportError
from convforge.modelfile import load_model
from convforge.numbers import sig
from convforge.precision import float32_copy, model_precision
from convforge.timing import Stopwatch

BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
KERAS_CALLS = ("tf_function", "predict_on_batch")
_KERAS_LABEL = {"tf_function": "keras (tf.function)", "predict_on_batch": "keras (predict_on_batch)"}


def time_rounds(calls, runs=50, warmup=3, max_seconds=None, min_runs=3):
    """Wall times in ms for each (run, sample) pair, timed in turns so that changing load hits all alike.

    After `warmup` untimed calls each, every round calls each pair once (starting one later each round); a
    pair drops out once it has `min_runs` times and `max_seconds` of its own timed calls.
    """
    for run, sample in calls:
        for _ in range(warmup):
            run(sample)
    times, spent = [[] for _ in calls], [0.0] * len(calls)
    for turn in range(max(1, runs)):
        active = [i for i in range(len(calls))
                  if max_seconds is None or len(times[i]) < min_runs or spent[i] < max_seconds]
        if not active:
            break
        shift = turn % len(active)
        for i in active[shift:] + active[:shift]:
            run, sample = calls[i]
            clock = Stopwatch()
            run(sample)
            seconds = clock.seconds
            times[i].append(seconds * 1000.0)
            spent[i] += seconds
    return times


def time_calls(run, sample, runs=50, warmup=3, max_seconds=None, min_runs=3):
    """Wall times in ms of up to `runs` calls of run(sample) after `warmup` calls; stops after max_seconds."""
    return time_rounds([(run, sample)], runs, warmup, max_seconds, min_runs)[0]


def summarize(times):
    """Median, 90th percentile (linear interpolation) and fastest of a list of times in ms."""
    return {"median": round(float(np.median(times)), 3), "p90": round(float(np.percentile(times, 90)), 3),
            "min": round(float(np.min(times)), 3), "runs": len(times)}


def measure_all(items, runs=50, batch_runs=5, warmup=3, max_seconds=None):
    """For each (run, one, many): batch-1 latency (median, p90) and images/s at batch len(many), timed in turns."""
    latencies = time_rounds([(run, one) for run, one, _ in items], runs, warmup, max_seconds)
    # One warm-up at the large batch: a runtime may re-plan its buffers for a new shape on the first call.
    batches = time_rounds([(run, many) for run, _, many in items], batch_runs, 1, max_seconds, min_runs=2)
    return [{"latency_ms": summarize(latency), "batch": int(len(many)), "batch_runs": len(batch_times),
             "images_per_s": round(len(many) / (float(np.median(batch_times)) / 1000.0), 2)}
            for (_, _, many), latency, batch_times in zip(items, latencies, batches)]


def measure(run, one, many, runs=50, batch_runs=5, warmup=3, max_seconds=None):
    """Batch-1 latency (median, p90) of run(one) and images/s of run(many) from its median batch time."""
    return measure_all([(run, one, many)], runs, batch_runs, warmup, max_seconds)[0]


def pin_tf_threads(threads):
    """Fix TensorFlow's intra-op pool to `threads` (inter-op to 1) if TF has not started; return what it uses."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # the runtime is already initialized: its pools are fixed for the life of the process
    return int(tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count())


def keras_runner(model, call="tf_function"):
    """Return (run, info) calling a Keras model on a float32 batch via a tf.function or predict_on_batch."""
    import keras
    import tensorflow as tf

    if call not in KERAS_CALLS:
        raise ConvforgeError(f"keras_call={call!r} is not accepted; accepted: {', '.join(KERAS_CALLS)}")
    if call == "predict_on_batch":
        def run(images):
            """model.predict_on_batch, outputs as numpy."""
            return model.predict_on_batch(images)
        how = "model.predict_on_batch"
    else:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        graph = tf.function(lambda x: model(x, training=False), input_signature=[spec], jit_compile=False)

        def run(images):
            """One call of the traced graph, outputs copied to numpy like the other runtimes do."""
            return tf.nest.map_structure(lambda t: t.numpy(), graph(tf.constant(images)))
        how = "model(x, training=False) in one tf.function (graph, no XLA)"
    intra = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return run, {"runtime": f"Keras {keras.__version__} on TensorFlow {tf.__version__}: {how}",
                 "threads": int(intra)}


def find_model_path(out_dir, card, model=None):
    """The .keras file to compare with: `model` when given, else the card's source.model_path; None if neither."""
    if model is not None:
        if not os.path.isfile(str(model)):
            raise ConvforgeError(f"model file {str(model)!r} does not exist; accepted: a .keras file (a run's "
                                 f"model.keras)")
        return os.path.abspath(str(model))
    path = (card.get("source") or {}).get("model_path")
    if path and not os.path.isabs(path):
        path = os.path.join(out_dir, path)
    return path if path and os.path.isfile(path) else None


def load_keras_model(path, shape):
    """Load a .keras file and check that its input matches the export's (H, W, C); raise ConvforgeError."""

    model = load_model(path)  # a ModelError in one sentence for a missing, bad or hostile file
    got = tuple(model.input_shape[1:])
    if got != tuple(shape):
        raise ConvforgeError(f"model file {path!r} takes input {list(got)}, the export {list(shape)}; accepted: "
                             f"the model the folder was exported from")
    return model


def _inputs(out_dir, card, batch):
    """Batch-1 and batch-B float32 inputs built from the folder's check images (tiled to B)."""
    from convforge.export.verify import saved_check_images

    shape = tuple(card["input"]["shape"][1:])
    images = saved_check_images(out_dir, card)
    return images[:1], np.resize(images, (batch, *shape))


def _metric(check):
    """The card's quality figure for an artifact: its task metric, else top-1 agreement with Keras."""
    if check.get("metric") is not None:
        value = check["metric"]
        if isinstance(value, dict) and value.get("value") is not None:
            # convforge.export's validation score: {"name", "value", "keras", "drop_points", ...}
            text = f"val {value.get('name', 'metric')} {value['value']:.2%}"
            if value.get("drop_points") is not None:
                text += f" (drop {value['drop_points']:.2f} pt)"
            return text
        if not isinstance(value, dict):
            return f"{check.get('metric_name', 'metric')} {sig(value, 4)}"
    if check.get("top1_agreement") is not None:
        return f"top-1 agreement {check['top1_agreement']:.0%}"
    return None


def _trained_check(copy):
    """The card's figures for the model as trained: its own val metric and its max |Δ| from the float32 copy."""
    scored = copy.get("metric")
    metric = {"name": scored["name"], "value": scored["keras"]} if scored else None
    return {"max_abs_diff": copy.get("max_abs_diff"), "metric": metric}


def _row(fmt, file, size, measured, info, check=None):
    """One result row: the artifact, its size, its timings, the runtime and the card's check figures."""
    check = check or {}
    return {"format": fmt, "file": file, "bytes": size, "size_mb": None if size is None else round(size / 1e6, 3),
            **measured, "runtime": info.get("runtime"), "threads": info.get("threads"),
            "metric": _metric(check), "max_abs_diff": check.get("max_abs_diff"), "status": check.get("status")}


def bench_dir(out_dir, model=None, runs=50, batch=32, threads=1, warmup=3, batch_runs=5, max_seconds=30.0,
              keras_call="tf_function", formats=None, progress=None):
    """Time every artifact of an export folder (and its Keras model, when found) and return the result dict.

    Args:
        out_dir: a folder written by `convforge.export` (holding card.json).
        model: a .keras file to time as the reference; default: the card's source.model_path when it exists.
        runs: batch-1 calls per artifact for the median and p90 (fewer if `max_seconds` passes first).
        batch: batch size of the images/s measurement; batch_runs: calls at that batch.
        threads: runtime threads (LiteRT, ONNX Runtime; TensorFlow's pool when TF has not started yet).
        warmup: untimed calls before timing. max_seconds: time bound of each phase per artifact.
        keras_call: "tf_function" or "predict_on_batch". formats: only these formats (default: all).
        progress: callable taking one line per timed row (None: silent).

    Returns:
        {"dir", "model", "created", "machine", "settings", "rows": [keras row first, then one per artifact],
         "ratios": `ratios` of the medians, "ratios_fastest": of the fastest runs}
    """
    from convforge.export.card import read_card, size_bytes
    from convforge.export.verify import FlexUnavailable, runner

    say = progress or (lambda *_: None)
    if not os.path.isdir(str(out_dir)):
        raise ExportError(f"export folder {str(out_dir)!r} does not exist; accepted: a folder written by "
                          f"`convforge export`")
    for name, value, low in (("runs", runs, 1), ("batch", batch, 1), ("threads", threads, 1),
                             ("warmup", warmup, 0), ("batch_runs", batch_runs, 1)):
        if not isinstance(value, int) or value < low:
            raise ConvforgeError(f"{name}={value!r} is not accepted; accepted: an integer >= {low}")
    out_dir = os.path.abspath(str(out_dir))
    card = read_card(out_dir)
    model_path = find_model_path(out_dir, card, model)
    shape = tuple(card["input"]["shape"][1:])
    entries = [e for e in card["artifacts"] if formats is None or e["format"] in formats]
    for entry in entries:
        if not os.path.exists(os.path.join(out_dir, entry["file"])):
            raise ExportError(f"{entry['file']} is listed in {out_dir}/card.json but missing; accepted: an export "
                              f"folder as convforge.export wrote it")
    tf_threads = pin_tf_threads(threads)
    keras_model = load_keras_model(model_path, shape) if model_path else None
    same_weights = None
    if keras_model is not None and card["model"].get("weights_sha256"):
        from convforge.export import weights_sha256

        same_weights = weights_sha256(keras_model) == card["model"]["weights_sha256"]
        if not same_weights:
            say(f"bench: warning: {model_path} has other weights than the export (weights SHA-256 differs)")
    one, many = _inputs(out_dir, card, batch)
    timing = dict(runs=runs, batch_runs=batch_runs, warmup=warmup, max_seconds=max_seconds)

    # Load every runtime first, then time them in turns: load from other processes then hits all formats alike.
    loaded, skipped = [], []
    trained_precision = None if keras_model is None else model_precision(keras_model)
    if keras_model is not None:
        # The artifacts were made from the float32 copy, so that is the reference row; a mixed-precision model
        # is timed as trained too, in the row after it (bf16 pays off only on CPUs with AVX512-BF16 or AMX).
        run, info = keras_runner(float32_copy(keras_model), keras_call)
        loaded.append((_KERAS_LABEL[keras_call], os.path.basename(model_path), size_bytes(model_path), None,
                       run, one, many, info))
        if trained_precision != "float32":
            run, info = keras_runner(keras_model, keras_call)
            label = _KERAS_LABEL[keras_call].replace("keras", f"keras {trained_precision}", 1)
            copy = (card.get("precision") or {}).get("float32_copy_vs_trained") or {}
            loaded.append((label, os.path.basename(model_path), size_bytes(model_path),
                           _trained_check(copy) if copy else None,
                           run, one, many, info))
    served = card["input"].get("served_preprocessing")
    for entry in entries:
        path = os.path.join(out_dir, entry["file"])
        try:
            run, info = runner(entry["format"], path, threads)
        except FlexUnavailable as error:
            skipped.append({**_row(entry["format"], entry["file"], size_bytes(path), {}, {}, entry.get("check")),
                            "status": "not timed", "reason": str(error)})
            continue
        x1, xb = one, many
        if entry["format"] == "saved_model" and served:
            # This SavedModel takes uint8 images of any size and resizes and normalizes them itself.
            from convforge.export.verify import check_uint8_images

            xb = check_uint8_images(shape, len(many))
            x1 = xb[:1]
            info = {**info, "note": "includes the served resize and normalization (uint8 input)"}
        loaded.append((entry["format"], entry["file"], size_bytes(path), entry.get("check"), run, x1, xb, info))
    say(f"bench: timing {len(loaded)} runtime(s) in turns: up to {runs} batch-1 runs and {batch_runs} runs at "
        f"batch {batch} each, {threads} thread(s)")
    measured = measure_all([(run, x1, xb) for *_, run, x1, xb, _ in loaded], **timing)
    rows = []
    for (fmt, file, size, check, *_, info), result in zip(loaded, measured):
        rows.append(_row(fmt, file, size, result, info, check))
        say(_line(rows[-1]))
    rows += skipped
    for row in skipped:
        say(_line(row))
    return {"dir": out_dir, "model": card["model"]["name"], "model_path": model_path,
            "keras_weights_match_card": same_weights,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": describe_machine(), "cpu_features": cpu_features(),
            "precision": {"trained": trained_precision, **{k: v for k, v in (card.get("precision") or {}).items()
                                                           if k == "exported"}},
            "settings": {"batch": batch, "threads": threads, "tensorflow_threads": tf_threads,
                         "keras_call": keras_call if keras_model is not None else None, **timing},
            "rows": rows, "ratios": ratios(rows), "ratios_fastest": ratios(rows, "min")}


def _latency(rows, fmt, stat="median"):
    """The batch-1 latency statistic of the row of `fmt` (a format or a keras label), or None."""
    for row in rows:
        if row["format"] == fmt or (fmt == "keras" and row["format"].startswith("keras")):
            return (row.get("latency_ms") or {}).get(stat)
    return None


def ratios(rows, stat="median"):
    """Batch-1 latency ratios: int8 / fp32 TFLite; ONNX, TFLite fp32 and SavedModel / Keras (float32); and the
    Keras model in its training precision / its float32 copy, when it was trained in mixed precision."""
    pairs = {"tflite_int8_vs_tflite": ("tflite_int8", "tflite"), "onnx_vs_keras": ("onnx", "keras"),
             "tflite_vs_keras": ("tflite", "keras"), "saved_model_vs_keras": ("saved_model", "keras")}
    found = {}
    for key, (top, bottom) in pairs.items():
        a, b = _latency(rows, top, stat), _latency(rows, bottom, stat)
        found[key] = round(a / b, 3) if a and b else None
    keras_rows = [r for r in rows if r["format"].startswith("keras") and r.get("latency_ms")]
    if len(keras_rows) > 1:
        found["keras_trained_precision_vs_float32"] = round(keras_rows[1]["latency_ms"][stat] /
                                                            keras_rows[0]["latency_ms"][stat], 3)
    return found


def _line(row):
    """One progress line for a timed row."""
    if not row.get("latency_ms"):
        return f"bench: {row['format']} ({row['file']}): {row.get('status')}"
    return (f"bench: {row['format']} ({row['file']}): {sig(row['latency_ms']['median'])} ms median, "
            f"{sig(row['latency_ms']['p90'])} ms p90, {sig(row['images_per_s'], 4)} images/s at batch "
            f"{row['batch']}")


def render_markdown(result):
    """The benchmark as a Markdown table with a line on how it was measured."""
    settings = result["settings"]
    batch = settings["batch"]
    lines = [f"| format | file | size MB | latency median ms | p90 ms | images/s (batch {batch}) | threads | metric "
             f"| max abs Δ vs Keras |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for row in result["rows"]:
        latency = row.get("latency_ms") or {}
        reference = row["format"].startswith("keras") and row.get("max_abs_diff") is None
        delta = "reference" if reference else sig(row.get("max_abs_diff"), 2)
        lines.append(f"| {row['format']} | {row['file']} | {sig(row['size_mb'])} | {sig(latency.get('median'))} "
                     f"| {sig(latency.get('p90'))} | {sig(row.get('images_per_s'), 4)} | {sig(row['threads'])} "
                     f"| {row['metric'] or '-'} | {delta} |")
    timing = (f"Batch-1 latency: median and p90 of up to {settings['runs']} runs after {settings['warmup']} "
              f"warm-up calls; images/s from the median of up to {settings['batch_runs']} calls at batch {batch}; "
              f"all formats timed in turns (one call each per round), each stopping after "
              f"{settings['max_seconds']:g} s of its own time. Runtime threads: {settings['threads']} "
              f"(TensorFlow: {settings['tensorflow_threads']}). {result['machine']}.")
    if settings.get("keras_call") == "predict_on_batch":
        timing += " Keras: `model.predict_on_batch`."
    elif settings.get("keras_call"):
        timing += " Keras: `model(x, training=False)` in one `tf.function` (graph mode, no XLA)."
    else:
        timing += " No Keras model was found (pass --model MODEL.keras), so there is no Keras row."
    trained = (result.get("precision") or {}).get("trained")
    if trained and trained != "float32":
        timing += (f" The model was trained in {trained}: the first Keras row is its float32 copy (what every "
                   f"artifact was made from and is compared with), the second the model as trained.")
    ratio = result["ratios"]
    named = [(k, v) for k, v in ratio.items() if v is not None]
    lines += ["", timing, "", "metric and max abs Δ come from the export's card (its check images)."]
    if result.get("keras_weights_match_card") is False:
        lines += ["", "Warning: the Keras model's weights differ from those the folder was exported from "
                      "(weights SHA-256 in card.json), so its row compares with another model."]
    if named:
        lines += ["", "Latency ratios (batch 1, median): " + ", ".join(f"{k} {v:.2f}" for k, v in named) + "."]
    return "\n".join(lines) + "\n"


def write_results(result, out_dir):
    """Write bench.json and bench.md into out_dir (created when missing), each atomically; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, BENCH_JSON), os.path.join(out_dir, BENCH_MD)
    write_text(json_path, json.dumps(result, indent=1) + "\n")
    write_text(md_path, render_markdown(result))
    return json_path, md_path


def latencies_in_turns(model, image, paths, runs=30, warmup=3, max_seconds=20.0, threads=1):
    """Median batch-1 milliseconds of a Keras model ("keras") and of exported artifacts ({format: path}, each in
    its runtime with `threads` threads), timed in turns on one image; returns ({name: ms}, {format: why it could
    not run})."""
    from convforge.errors import one_line
    from convforge.export.verify import runner

    run, _ = keras_runner(model)
    calls, names, notes = [(run, image)], ["keras"], {}
    for fmt, path in paths.items():
        try:
            run, _ = runner(fmt, path, threads)
            run(image)
        except Exception as error:  # an artifact its runtime refuses is a note in its cell, not a failed table
            notes[fmt] = one_line(error)
            continue
        calls.append((run, image))
        names.append(fmt)
    times = time_rounds(calls, runs=runs, warmup=warmup, max_seconds=max_seconds)
    return {name: summarize(t)["median"] for name, t in zip(names, times)}, notes
