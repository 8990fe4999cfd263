"""Input pipeline vs training step: images/s of the shapes COCO pipeline at 64 and 224 px next to resnet18's
training throughput on the same CPU, so we can see whether the input is ever the bottleneck.

Writes benchmarks/results/pipeline_speed.json and .md. Run: make bench (or python benchmarks/pipeline_speed.py)
"""
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

import convforge  # noqa: E402
from convforge import data  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results"


def pipeline_rate(source, size, batch=32, batches=40, augment=("flip", "translate")):
    """Images/s the training pipeline delivers (decode, resize, augment, normalize), after a warm-up."""
    ds = data.build_dataset(source, "classification", (size, size, 3), batch, True, augment=list(augment),
                            seed=0).repeat()
    it = iter(ds)
    for _ in range(3):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def train_rate(size, batch=32, steps=10, name="resnet18"):
    """Images/s of model.train_on_batch on random data (no input pipeline at all)."""
    model = convforge.build_model(name, num_classes=4, input_shape=(size, size, 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.rand(batch, size, size, 3).astype("float32")
    y = np.random.randint(0, 4, size=(batch,))
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    rate = steps * batch / (time.perf_counter() - start)
    keras.backend.clear_session()
    return rate


def main(sizes=(64, 224)):
    """Measure both rates at each size and write the results."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            source = data.load_shapes("train", out_dir=os.path.join(tmp, f"s{size}"), n=400, size=size)
            p = pipeline_rate(source, size)
            t = train_rate(size, steps=10 if size <= 64 else 3)
            rows.append({"size": size, "pipeline_images_per_s": round(p, 1), "resnet18_train_images_per_s": round(t, 1),
                         "ratio": round(p / t, 1)})
            print(f"{size}px: pipeline {p:.0f} img/s, resnet18 training {t:.1f} img/s, ratio {p / t:.1f}x", flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "pipeline_speed.json").write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    lines = ["| input | pipeline img/s | resnet18 train img/s | pipeline / train |", "|---|---:|---:|---:|"]
    lines += [f"| {r['size']}px | {r['pipeline_images_per_s']} | {r['resnet18_train_images_per_s']} | {r['ratio']}x |"
              for r in rows]
    (OUT / "pipeline_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(tuple(int(s) for s in sys.argv[1:]) or (64, 224))
