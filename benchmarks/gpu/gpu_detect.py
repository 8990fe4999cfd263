"""GPU check under KERAS_BACKEND=jax: the YOLO and SSD shapes detectors (as the shipped recipes build them) train
with mixed_float16 and float32; epoch times, losses and weights come back for evaluation on the CPU side."""
import json, os, sys, time

import numpy as np
import keras
import jax

out = os.environ["OUT"]
from PIL import Image
from convforge.data.shapes import generate_shapes
from convforge.tasks import get_task

results = {"devices": [str(d) for d in jax.devices()], "keras": keras.__version__, "jax": jax.__version__}
t = time.time()
generate_shapes("/tmp/shapes96_det", n=int(os.environ.get("N", 4000)), size=96, seed=0, objects=(1, 4))
results["generate_s"] = round(time.time() - t, 1)


def load(split):
    data = json.load(open(f"/tmp/shapes96_det/annotations/instances_{split}.json"))
    cats = sorted(c["id"] for c in data["categories"])
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images, targets = [], np.zeros((len(data["images"]), 8, 6), "float32")
    for i, im in enumerate(data["images"]):
        images.append(np.asarray(Image.open(f"/tmp/shapes96_det/images/{split}/{im['file_name']}").convert("RGB")))
        for j, a in enumerate(by_image.get(im["id"], [])[:8]):
            x, y, w, h = a["bbox"]
            targets[i, j] = [y / im["height"], x / im["width"], (y + h) / im["height"], (x + w) / im["width"],
                             cats.index(a["category_id"]), 1 - a.get("iscrowd", 0)]
    x = np.stack(images).astype("float32") / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], "float32")) / np.array([0.229, 0.224, 0.225], "float32")
    return x, targets


x, y = load("train")
results["train_images"] = len(x)


def batches(x, y, batch, rng):
    """An epoch of shuffled batches, each image flipped left-right with probability 1/2 (boxes too)."""
    order = rng.permutation(len(x))
    for s in range(0, len(order) - batch + 1, batch):
        idx = order[s:s + batch]
        xb, yb = x[idx].copy(), y[idx].copy()
        flip = rng.random(len(idx)) < 0.5
        xb[flip] = xb[flip][:, :, ::-1]
        xmin = yb[flip, :, 1].copy()
        yb[flip, :, 1] = np.where(yb[flip, :, 5] > 0, 1 - yb[flip, :, 3], 0)
        yb[flip, :, 3] = np.where(yb[flip, :, 5] > 0, 1 - xmin, 0)
        yield xb, yb


epochs, batch = int(os.environ.get("EPOCHS", 10)), 32
steps = len(x) // batch
for head in sys.argv[1].split(","):
    for policy in sys.argv[2].split(","):
        keras.utils.set_random_seed(0)
        task = get_task("detection", {"name": head, "levels": ["C3", "C4", "C5"]})
        model = task.build_model("resnet18", (96, 96, 3), 4, {"widths": [16, 32, 64, 128]}, dtype=policy)
        schedule = keras.optimizers.schedules.CosineDecay(0.0, max(epochs - 1, 1) * steps, warmup_target=0.003,
                                                          warmup_steps=steps)
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.0005)
        if policy == "mixed_float16":  # as convforge's trainer does: float16 gradients need loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, **task.compile_args(model))
        rng = np.random.default_rng(0)
        times, losses = [], []
        for epoch in range(epochs):
            start, total = time.time(), []
            for xb, yb in batches(x, y, batch, rng):
                total.append(model.train_on_batch(xb, yb))
            jax.block_until_ready(model.trainable_weights[0].value)
            times.append(round(time.time() - start, 2))
            losses.append(round(float(np.mean(total)), 4))
            print(head, policy, epoch + 1, times[-1], losses[-1], flush=True)
        model.save_weights(os.path.join(out, f"{head}_{policy}.weights.h5"))
        results[f"{head}_{policy}"] = {"epoch_seconds": times, "losses": losses, "optimizer": type(model.optimizer).__name__,
                                       "compute_dtype": model.layers[5].compute_dtype}
        json.dump(results, open(os.path.join(out, "gpu_detect.json"), "w"), indent=1)
json.dump(results, open(os.path.join(out, "gpu_detect.json"), "w"), indent=1)
print(json.dumps(results))
