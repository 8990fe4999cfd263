"""The architecture comparison: per registered model, params, MACs, size, batch-1 CPU latency in Keras and in
TFLite, and (with a recipe) DAWNBench-style time-to-accuracy; written as compare.json, compare.md, compare.png.

Every model is built at one input size (raised to the architecture's minimum where it is smaller, and the row
says so) with its published class count, so the numbers compare architectures rather than heads. Training, when
asked for, runs the recipe with `model.architecture` swapped in and keeps the recipe's own input shape and data.

Examples:
    >>> from convforge.bench.compare import compare
    >>> result = compare("lenet5,squeezenet1_1", input_size=32, out_dir="compare_demo", progress=None)
    >>> [r["name"] for r in result["models"]]
    ['lenet5', 'squeezenet1_1']
"""
import csv
import datetime
import gc
import json
import math
import os
import pathlib
import platform
import tempfile


from convforge.atomic import replacing, write_text
from convforge.bench.export_speed import keras_runner
from convforge.errors import ConvforgeError, close_matches, one_line
from convforge.numbers import cell, si, sig
from convforge.registry import get_spec, list_models
from convforge.timing import Stopwatch

FILES = ("compare.json", "compare.md", "compare.png")
LATENCY_RUNS = 20
WARMUP_RUNS = 3
# Largest bubble, in points²; the smallest are kept visible (LeNet-5 is 2000x smaller than VGG).
MAX_BUBBLE, MIN_BUBBLE = 2500.0, 18.0


def select_models(patterns):
    """Return the registered names matching comma-separated shell patterns, in the order the patterns come."""
    wanted = [p.strip() for p in str(patterns).split(",") if p.strip()]
    if not wanted:
        raise ConvforgeError(f"--models {patterns!r} names no pattern; accepted: comma-separated names or "
                             f"shell patterns such as 'resnet*,vgg11'")
    registered, names = list_models(), []
    for pattern in wanted:
        matches = list_models(pattern)
        if not matches:
            hint = close_matches(pattern.lower(), registered) or f"; registered: {', '.join(registered)}"
            raise ConvforgeError(f"no registered model matches {pattern!r}{hint}")
        names += [m for m in matches if m not in names]
    return names


def measure_model(name, input_size=224, runs=LATENCY_RUNS, threads=None):
    """Build `name` at input_size (raised to its minimum) and return its row: size, MACs, batch-1 latencies."""
    import keras

    from convforge import convmath
    from convforge.backbones import build_backbone
    from convforge.export import export
    from convforge.export.saved_model import resolve_output_names
    from convforge.export.verify import check_images, latency_ms, max_abs_diff, named_outputs, runner

    spec = get_spec(name)
    size = max(int(input_size), spec.min_input_size)
    shape = (size, size, spec.default_input_shape[2])
    row = {"name": name, "family": spec.family, "input_shape": list(shape), "num_classes": spec.num_classes,
           "note": "", "error": None}
    if size != input_size:
        row["note"] = f"input raised from {input_size} to {size}, the smallest {name} takes"
    clock = Stopwatch()
    try:
        model = build_backbone(name, input_shape=shape)
        counts = convmath.count_params(model)
        row.update(params=counts["total"], trainable=counts["trainable"], macs=int(convmath.count_macs(model)),
                   weights_mb=round(counts["total"] * 4 / 1e6, 3))
        sample = check_images(shape, 1)
        keras_run, _ = keras_runner(model)
        row["keras_latency_ms"] = round(latency_ms(keras_run, sample, runs, WARMUP_RUNS), 3)
        keras_outputs = model(sample, training=False)
    except Exception as error:  # one model's failure is its row's, not the comparison's
        row["error"] = one_line(error)
        keras.backend.clear_session()
        return row
    try:
        with tempfile.TemporaryDirectory(prefix="convforge-compare-") as tmp:
            path = export(model, tmp, formats=["tflite"], verify=False, progress=None)["paths"]["tflite"]
            row["tflite_mb"] = round(os.path.getsize(path) / 1e6, 3)
            tflite_run, _ = runner("tflite", path, threads)
            names = resolve_output_names(model, keras_outputs)
            outputs = tflite_run(sample)
            # Recorded, not enforced: a latency of a conversion that computes something else would mislead.
            row["tflite_max_abs_diff"] = float(f"{max_abs_diff(named_outputs(keras_outputs, names), outputs):.3g}")
            row["tflite_latency_ms"] = round(latency_ms(tflite_run, sample, runs, WARMUP_RUNS), 3)
            del tflite_run
    except Exception as error:
        row["error"] = "tflite: " + one_line(error)
    row["measure_seconds"] = round(clock.seconds, 1)
    del model, keras_run
    keras.backend.clear_session()
    gc.collect()
    return row


def _accuracy_column(header):
    """The history column holding top-1 val accuracy (Keras prefixes it with the output name on multi-output
    models, e.g. GoogLeNet with auxiliary heads)."""
    if "val_accuracy" in header:
        return "val_accuracy"
    return next((k for k in header if k.startswith("val_") and k.endswith("_accuracy") and "top" not in k), None)


def time_to_accuracy(run_dir, target):
    """Read a run's history.csv and epoch_times.csv: training seconds until val accuracy first reached target."""
    run_dir = pathlib.Path(run_dir)
    result = {"time_to_accuracy_s": None, "epochs_to_accuracy": None, "best_val_accuracy": None}
    try:
        with open(run_dir / "history.csv", newline="", encoding="utf-8") as f:
            history = list(csv.DictReader(f))
    except OSError:
        return result
    column = _accuracy_column(history[0]) if history else None
    if column is None:
        return result
    seconds = {}
    try:
        with open(run_dir / "epoch_times.csv", newline="", encoding="utf-8") as f:
            seconds = {int(r["epoch"]): float(r["seconds"]) for r in csv.DictReader(f)}
    except OSError:
        pass  # a run from before epoch times were logged: accuracy only
    accuracies = [float(r[column]) for r in history]
    result["best_val_accuracy"] = round(max(accuracies), 4)
    elapsed = 0.0
    for row, accuracy in zip(history, accuracies):
        epoch = int(row["epoch"])
        elapsed = elapsed + seconds[epoch] if epoch in seconds and elapsed is not None else None
        if accuracy >= target:
            result["time_to_accuracy_s"] = None if elapsed is None else round(elapsed, 2)
            result["epochs_to_accuracy"] = epoch + 1
            break
    return result


def train_model(name, recipe_path, overrides, run_root, target, printer=None):
    """Train recipe_path with model.architecture=name into a fresh run under run_root; return its training row."""
    import keras

    from convforge.recipes import load_recipe
    from convforge.train import train
    from convforge.train.trainer import new_run_dir

    spec = get_spec(name)
    base = load_recipe(recipe_path, overrides)
    swap = [f"model.architecture={name}"]
    note = ""
    if base.model.input_shape is not None:
        h, w, c = base.model.input_shape
        size_h, size_w = max(h, spec.min_input_size), max(w, spec.min_input_size)
        swap.append(f"model.input_shape=[{size_h},{size_w},{c}]")
        if (size_h, size_w) != (h, w):
            note = f"trained at {size_h}x{size_w} (recipe: {h}x{w}), the smallest {name} takes"
    recipe = load_recipe(recipe_path, [*overrides, *swap])
    run_dir = new_run_dir(name, root=run_root)
    keras.backend.clear_session()
    result = train(recipe, run_dir=run_dir, printer=printer or (lambda *_: None), verbose=0)
    keras.backend.clear_session()
    gc.collect()
    row = {"run_dir": str(run_dir), "train_input_shape": list(recipe.model.input_shape or spec.default_input_shape),
           "train_epochs": result["metrics"].get("epochs_completed"), "train_seconds": result["metrics"].get("seconds"),
           "train_note": note, **time_to_accuracy(run_dir, target)}
    return row


def format_markdown(result):
    """The comparison as a Markdown table with a line saying how and where it was measured."""
    settings, machine, rows = result["settings"], result["machine"], result["models"]
    trained = settings["train_recipe"] is not None
    head = ["model", "input", "params", "MACs", "fp32 weights MB", ".tflite MB", "Keras ms", "TFLite ms"]
    if trained:
        head += [f"time to {settings['target_accuracy']:.0%} s", "epochs", "best val acc"]
    head.append("note")
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    for r in rows:
        notes = [n for n in (r.get("note"), r.get("train_note"), r.get("error"), r.get("train_error")) if n]
        cells = [r["name"], "x".join(map(str, r["input_shape"])), cell(r.get("params"), "{:,}"),
                 si(r["macs"]) if r.get("macs") is not None else "–", sig(r.get("weights_mb"), missing="–"),
                 sig(r.get("tflite_mb"), missing="–"), sig(r.get("keras_latency_ms"), missing="–"),
                 sig(r.get("tflite_latency_ms"), missing="–")]
        if trained:
            reached = r.get("time_to_accuracy_s")
            cells += ["not reached" if reached is None and r.get("best_val_accuracy") is not None else
                      cell(reached, "{:.1f}"), cell(r.get("epochs_to_accuracy")),
                      cell(r.get("best_val_accuracy"), "{:.4f}")]
        cells.append("; ".join(notes).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    threads = f"TFLite {settings['tflite_threads']} thread(s), TensorFlow {settings['keras_threads']}"
    lines.append("")
    lines.append(f"Batch 1, median of {settings['runs']} runs after {WARMUP_RUNS} warm-up; {threads}; "
                 f"{machine.get('description') or str(machine['cpu_count']) + ' CPU cores'}, load average "
                 f"{machine['load_average']} at start; TensorFlow {machine['tensorflow']}, Keras {machine['keras']}. "
                 f"MACs per image; fp32 weights MB = params x 4 bytes; Keras ms is the traced (tf.function) call.")
    if trained:
        lines.append(f"Trained with {settings['train_recipe']} ({' '.join(settings['overrides']) or 'as written'}) "
                     f"at the recipe's input size; time to accuracy sums epoch wall times from the first step "
                     f"(validation included, set-up and checkpoint writes not) until val accuracy first reached "
                     f"{settings['target_accuracy']}.")
    return "\n".join(lines) + "\n"


def plot_comparison(result, path):
    """Bubble plot: x = MACs (log), y = best val accuracy when trained, else TFLite latency; area ∝ params."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    trained = result["settings"]["train_recipe"] is not None
    rows = result["models"]
    if trained:
        recipe = os.path.basename(result["settings"]["train_recipe"])
        y_key, y_label = "best_val_accuracy", f"best val accuracy ({recipe})"
    elif any(r.get("tflite_latency_ms") for r in rows):
        y_key, y_label = "tflite_latency_ms", "TFLite fp32 latency, batch 1 (ms)"
    else:
        y_key, y_label = "keras_latency_ms", "Keras latency, batch 1 (ms)"
    shown = [r for r in rows if r.get("macs") and r.get(y_key) is not None and r.get("params")]
    fig = Figure(figsize=(9, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    size = result["settings"]["input_size"]
    raised = " (or each model's minimum)" if any(r.get("note") for r in rows) else ""
    ax.set_title(f"Architectures at {size}x{size}{raised}: bubble area ∝ parameters")
    ax.set_xlabel("MACs per image (log scale)")
    ax.set_ylabel(y_label)
    if not shown:
        ax.text(0.5, 0.5, "no model measured", ha="center", va="center", transform=ax.transAxes)
    else:
        largest = max(r["params"] for r in shown)
        families = sorted({r["family"] for r in shown})
        colors = {f: f"C{i % 10}" for i, f in enumerate(families)}
        for r in shown:
            area = max(MIN_BUBBLE, MAX_BUBBLE * r["params"] / largest)
            ax.scatter(r["macs"], r[y_key], s=area, color=colors[r["family"]], alpha=0.55, edgecolors="black",
                       linewidths=0.6)
            ax.annotate(r["name"], (r["macs"], r[y_key]), xytext=(0, math.sqrt(area) / 2 + 3),
                        textcoords="offset points", ha="center", fontsize=8)
        ax.set_xscale("log")
        if not trained:
            ax.set_yscale("log")
        # Reference bubbles make the areas readable as parameter counts.
        counts = [c for c in (1e5, 1e6, 1e7, 1e8) if largest / 300 <= c <= largest * 1.5][-3:] or [largest]
        for count in counts:
            ax.scatter([], [], s=max(MIN_BUBBLE, MAX_BUBBLE * count / largest), color="grey", alpha=0.4,
                       edgecolors="black", linewidths=0.6, label=f"{si(count)} params")
        ax.legend(loc="best", labelspacing=2.0, borderpad=1.2, frameon=False, fontsize=8)
        ax.margins(0.15)
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    with replacing(path, "wb") as handle:
        fig.savefig(handle, format="png")


def _machine():
    """What the numbers were measured on, load included: the machine may be shared."""
    import keras
    import tensorflow as tf

    from convforge.cpu import cpu_features, describe_machine

    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "description": describe_machine(), "cpu_features": cpu_features(),
            "load_average": round(os.getloadavg()[0], 2), "tensorflow": tf.__version__, "keras": keras.__version__}


def machine_line(machine):
    """The closing line of a bench table: the CPU, the TensorFlow and Keras versions and the load at its start."""
    return (f"{machine['description']}; TensorFlow {machine['tensorflow']}, Keras {machine['keras']}; 1-minute "
            f"load average {machine['load_average']} when it began.")


def compare(models="*", input_size=224, train_recipe=None, overrides=(), target_accuracy=0.8, out_dir="compare",
            runs=LATENCY_RUNS, threads=None, progress=print):
    """Measure every architecture matching `models` (and train each on train_recipe); write the three files.

    Args:
        models: comma-separated names or shell patterns, e.g. "resnet*,vgg11".
        input_size: square input side; each model takes at least its own minimum (noted in its row).
        train_recipe: a recipe path; each model trains it with model.architecture swapped in, into
            out_dir/runs/<name>/<timestamp>. overrides: `--set` items applied to it first.
        target_accuracy: the val accuracy time-to-accuracy counts up to.
        runs: batch-1 latency runs (median) after a warm-up. threads: LiteRT threads, and TensorFlow's when
            it has not started yet (default: TensorFlow's own count, all cores, for both).
        progress: callable taking one line per model (None: silent).

    Returns:
        {"settings", "machine", "models": one row per model, "files": paths written}
    """
    import tensorflow as tf

    say = progress or (lambda *_: None)
    names = select_models(models)
    if int(input_size) < 1 or int(runs) < 1:
        raise ConvforgeError(f"input_size={input_size} and runs={runs} must be positive integers")
    if not 0 < float(target_accuracy) <= 1:
        raise ConvforgeError(f"target_accuracy={target_accuracy} is not a fraction; accepted: 0 < value <= 1")
    overrides = list(overrides or ())
    if train_recipe is not None:
        from convforge.recipes import load_recipe

        load_recipe(train_recipe, overrides)  # a bad recipe fails now, before hours of measuring
    if threads is not None:
        if int(threads) < 1:
            raise ConvforgeError(f"threads={threads} must be a positive integer")
        try:
            # Like for like: TensorFlow on as many threads as LiteRT. Its pools are fixed once it has run an op,
            # so in a busy process this may be too late; settings then records what it really uses.
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass
    keras_threads = int(tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count())
    threads = int(threads or keras_threads)
    out_dir = pathlib.Path(out_dir)
    settings = {"models": models, "input_size": int(input_size), "runs": int(runs), "tflite_threads": threads,
                "keras_threads": keras_threads, "train_recipe": None if train_recipe is None else str(train_recipe),
                "overrides": overrides, "target_accuracy": float(target_accuracy),
                "date": datetime.datetime.now().isoformat(timespec="seconds")}
    machine = _machine()
    rows = []
    for i, name in enumerate(names, 1):
        row = measure_model(name, input_size, runs, threads)
        if train_recipe is not None and row["error"] is None:
            try:
                row.update(train_model(name, train_recipe, overrides, out_dir / "runs", target_accuracy,
                                       printer=lambda m: say(f"    {m}") if m.startswith("epoch ") else None))
            except Exception as error:  # e.g. a recipe option this family does not take
                row["train_error"] = "training: " + one_line(error)
        rows.append(row)
        say(f"[{i}/{len(names)}] {_progress_line(row)}")
    result = {"settings": settings, "machine": machine, "models": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(out_dir / f) for f in FILES]
    write_text(paths[0], json.dumps(result, indent=1) + "\n")
    write_text(paths[1], format_markdown(result))
    plot_comparison(result, paths[2])
    result["files"] = paths
    return result


def _progress_line(row):
    """One line about a measured model."""
    shape = "x".join(map(str, row["input_shape"]))
    if row.get("params") is None:
        return f"{row['name']} {shape}: failed: {row['error']}"
    parts = [f"{si(row['params'])} params", f"{si(row['macs'])} MACs", f"{row['weights_mb']:.3g} MB",
             f"Keras {row['keras_latency_ms']:.3g} ms"]
    if row.get("tflite_latency_ms") is not None:
        parts.append(f"TFLite {row['tflite_latency_ms']:.3g} ms")
    if "best_val_accuracy" in row:
        reached = row.get("time_to_accuracy_s")
        parts.append(f"best val acc {row['best_val_accuracy']}, " +
                     ("target not reached" if reached is None else f"target in {reached:.1f} s"))
    extra = "; ".join(n for n in (row.get("note"), row.get("error"), row.get("train_error")) if n)
    return f"{row['name']} {shape}: " + ", ".join(parts) + (f" ({extra})" if extra else "")
