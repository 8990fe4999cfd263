"""Measure every registered architecture at its default input: params, MACs, time to build on this machine.

Writes benchmarks/results/model_table.json and model_table.md (the README's table), and the table shipped with
the package (src/convforge/bench/model_table.json) that `convforge models` reads. Run: make bench
"""
import json
import os
import pathlib
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from convforge.bench import model_row  # noqa: E402
from convforge.bench.models import write_shipped  # noqa: E402
from convforge.registry import get_spec, list_models  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results"


def main(pattern="*"):
    """Build each model fresh (no cache), print progress, and write the JSON and Markdown tables."""
    rows = []
    names = list_models(pattern)
    model_row(names[0])  # warm-up: the first build pays for TensorFlow's one-time initialisation
    for i, name in enumerate(names, 1):
        row = model_row(name)
        row["convention"] = "; ".join(f"{r.source} {r.count} {r.params:,}" for r in get_spec(name).references)
        rows.append(row)
        print(f"[{i}/{len(names)}] {name}: {row['params']:,} params, {row['macs'] / 1e9:.2f} GMACs, "
              f"built in {row['build_seconds']:.2f} s", flush=True)
    machine = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "tensorflow": tf.__version__, "keras": keras.__version__}
    OUT.mkdir(exist_ok=True)
    (OUT / "model_table.json").write_text(json.dumps({"machine": machine, "models": rows}, indent=1))
    lines = ["| model | input | params (Keras total) | trainable (PyTorch count) | GMACs | build s |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        shape = "x".join(map(str, r["input_shape"]))
        lines.append(f"| {r['name']} | {shape} | {r['params']:,} | {r['trainable']:,} | {r['macs'] / 1e9:.4g} | "
                     f"{r['build_seconds']:.2f} |")
    lines.append(f"\nMeasured on {machine['cpu_count']} CPU cores, TensorFlow {machine['tensorflow']}, "
                 f"Keras {machine['keras']}.")
    (OUT / "model_table.md").write_text("\n".join(lines) + "\n")
    if pattern == "*":
        write_shipped(rows)  # the table `convforge models` reads on a fresh install
    print(f"wrote {OUT / 'model_table.md'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
