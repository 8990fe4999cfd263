"""Per-format speed of exported models (issue #5): resnet18 and mobilenet_v2 at 224x224x3, 1000 classes, random
weights, exported to all six formats and timed by `convforge bench` next to Keras, at a fixed thread count.

Goals checked: TFLite int8 batch-1 latency <= 0.5 x TFLite fp32, and ONNX Runtime and TFLite fp32 both faster
than Keras at batch 1. int8 is calibrated on 100 images of the shapes dataset at 224 px (ImageNet-normalized).

Writes benchmarks/results/export_speed.json and .md.
Run: make bench, or python benchmarks/export_speed.py [--runs 50] [--batch 32] [--threads 1] [--note TEXT] [NAME ...]
"""
import argparse
import json
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from convforge.bench.export_speed import bench_dir, pin_tf_threads, render_markdown  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results"
MODELS = ("resnet18", "mobilenet_v2")
SHAPE = (224, 224, 3)
NUM_CLASSES = 1000
FORMATS = ("saved_model", "tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx")
GOALS = {"tflite_int8_vs_tflite": 0.5, "onnx_vs_keras": 1.0, "tflite_vs_keras": 1.0}


def calibration_images(folder, count=100):
    """`count` shapes images at 224 px, normalized as a training pipeline would (float32 [N, 224, 224, 3])."""
    from convforge import data

    source = data.load_shapes("train", out_dir=os.path.join(folder, "shapes"), n=int(count * 1.25) + 1,
                              size=SHAPE[0])
    ds = data.build_dataset(source, "classification", SHAPE, 25, False)
    batches, total = [], 0
    for images, _ in ds:
        batches.append(np.asarray(images))
        total += len(batches[-1])
        if total >= count:
            break
    return np.concatenate(batches)[:count]


def bench_model(name, folder, representative, runs, batch, threads):
    """Build `name` with random weights, export all formats, and time them; return bench_dir's result."""
    import keras

    import convforge
    from convforge.export import export

    keras.utils.set_random_seed(0)
    model = convforge.build_model(name, num_classes=NUM_CLASSES, input_shape=SHAPE)
    model_path = os.path.join(folder, f"{name}.keras")
    model.save(model_path)
    out = os.path.join(folder, name)
    start = time.perf_counter()
    export(model, out, FORMATS, representative=representative, progress=print, latency_runs=3, threads=threads,
           source={"model_path": model_path, "recipe": None})
    export_seconds = time.perf_counter() - start
    load = os.getloadavg()[0]
    result = bench_dir(out, model=model_path, runs=runs, batch=batch, threads=threads,
                       progress=lambda line: print(line, flush=True))
    result.update(export_seconds=round(export_seconds, 1), load_average_1min=[round(load, 2),
                                                                              round(os.getloadavg()[0], 2)])
    result.pop("dir"), result.pop("model_path")
    keras.backend.clear_session()
    return result


def cpu_description():
    """The CPU's model name and which int8 dot-product instruction sets it has (Linux /proc/cpuinfo)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU not identified"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    vnni = "with" if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "without"
    return f"{name} ({', '.join(simd) or 'no AVX2'}; {vnni} int8 dot-product instructions)"


def summary_table(results, key="ratios"):
    """One row per model: the three latency ratios the issue asks for, each against its goal."""
    lines = ["| model | TFLite int8 / fp32 (goal <= 0.5) | ONNX Runtime / Keras (goal < 1) | "
             "TFLite fp32 / Keras (goal < 1) | SavedModel / Keras |", "|---|---:|---:|---:|---:|"]
    for name, result in results.items():
        ratio = result[key]
        cells = []
        for pair in ("tflite_int8_vs_tflite", "onnx_vs_keras", "tflite_vs_keras", "saved_model_vs_keras"):
            value = ratio.get(pair)
            if value is None:
                cells.append("-")
                continue
            goal = GOALS.get(pair)
            met = value <= goal if pair == "tflite_int8_vs_tflite" else goal is not None and value < goal
            mark = "" if goal is None else (" ✓" if met else " ✗")
            cells.append(f"{value:.2f}{mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Export and time each model, then write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--note", default="", help="a sentence about the machine, e.g. that it was shared")
    args = parser.parse_args(argv)
    # Before TensorFlow starts: its thread pools cannot change afterwards.
    tf_threads = pin_tf_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        representative = calibration_images(tmp)
        for name in args.names:
            results[name] = bench_model(name, tmp, representative, args.runs, args.batch, args.threads)
    first = next(iter(results.values()))
    OUT.mkdir(exist_ok=True)
    cpu = cpu_description()
    payload = {"cpu": cpu, "input_shape": list(SHAPE), "num_classes": NUM_CLASSES, "weights": "random (seed 0)",
               "calibration": "100 shapes images at 224 px", "threads": args.threads, "tensorflow_threads": tf_threads,
               "machine": first["machine"], "note": args.note, "models": results}
    (OUT / "export_speed.json").write_text(json.dumps(payload, indent=1) + "\n")
    loads = [v for r in results.values() for v in r["load_average_1min"]]
    lines = ["# Export formats: latency and throughput", "",
             f"{', '.join(results)} at {'x'.join(map(str, SHAPE))}, {NUM_CLASSES} classes, random weights; "
             f"{args.threads} runtime thread(s) for every format; {first['machine']}, {cpu}; "
             f"measured {first['created']}.", "",
             "## Ratios (batch-1 median latency)", "", summary_table(results), "",
             f"1-minute load average before/after timing: {min(loads):.2f} to {max(loads):.2f} on "
             f"{os.cpu_count()} cores." + (f" {args.note}" if args.note else ""), "",
             "The same ratios from each format's fastest batch-1 run (less affected by other processes):", "",
             summary_table(results, "ratios_fastest"), "",
             "Weights are random: a 1000-class softmax is then nearly flat, so the quantized formats' top-1 "
             "agreement with Keras says little here (their max |Δ| on probabilities does); the timings and sizes "
             "do not depend on the weights."]
    for name, result in results.items():
        lines += ["", f"## {name}", "", render_markdown(result).rstrip()]
    (OUT / "export_speed.md").write_text("\n".join(lines) + "\n")
    print(summary_table(results))
    print(OUT / "export_speed.md")


if __name__ == "__main__":
    main()
