"""GPU sweep under KERAS_BACKEND=jax: which MobileNetV2 localization setting learns the shapes (class accuracy and
accuracy@IoU50 per epoch on val), to pick one worth timing on the 2-core CPU.

    gpu_loc.py CONFIGS_JSON [RESULT_NAME]

Each config may set: size (input side), data_size (the side the shapes are drawn at; 64 is the recipes' set,
upsampled to `size`), options (builder options, default alpha 0.5), head (localization head options), epochs,
batch, lr, wd, opt (adamw | sgd), schedule (cosine with a 1-epoch warm-up | onecycle), label_smoothing, seed.
Several invocations may share one GPU (XLA_PYTHON_CLIENT_PREALLOCATE=false); each writes RESULT_NAME. Draw the
sets before starting them side by side (as the README's command does), or each would draw its own at once.
"""
import functools, json, os, sys, time

import numpy as np
import keras
import jax
from PIL import Image

from convforge.boxes import box_iou
from convforge.data.shapes import generate_shapes
from convforge.tasks import get_task

out = os.environ["OUT"]


@functools.lru_cache(maxsize=4)
def load(split, data_size, size):
    """One split of the 6000-image set drawn at data_size px, resized to size, ImageNet-normalized, with labels
    and [ymin, xmin, ymax, xmax] boxes; draws the set first if /tmp lacks it."""
    root = f"/tmp/shapes{data_size}_6k"
    if not os.path.exists(f"{root}/annotations/instances_val.json"):
        generate_shapes(root, n=6000, size=data_size, seed=0, objects=(1, 1))
    data = json.load(open(f"{root}/annotations/instances_{split}.json"))
    cats = sorted(c["id"] for c in data["categories"])
    ann = {a["image_id"]: a for a in data["annotations"]}
    xs, labels, boxes = [], [], []
    for im in data["images"]:
        img = Image.open(f"{root}/images/{split}/{im['file_name']}").convert("RGB")
        if size != data_size:
            img = img.resize((size, size), Image.BILINEAR)
        xs.append(np.asarray(img))
        a = ann[im["id"]]
        x, y, w, h = a["bbox"]
        labels.append(cats.index(a["category_id"]))
        boxes.append([y / data_size, x / data_size, (y + h) / data_size, (x + w) / data_size])
    x = (np.stack(xs).astype("float32") / 255.0 - np.array([0.485, 0.456, 0.406], "float32")) / np.array(
        [0.229, 0.224, 0.225], "float32")
    return x, np.array(labels, "int32"), np.array(boxes, "float32")


def schedule_for(cfg, steps, epochs):
    """The config's learning-rate schedule, shaped as the recipe schema's cosine (1-epoch warm-up) or one_cycle."""
    lr = cfg.get("lr", 0.003)
    if cfg.get("schedule") == "onecycle":
        total, up = epochs * steps, int(0.3 * epochs * steps)
        return keras.optimizers.schedules.CosineDecay(lr / 25, total - up, warmup_target=lr, warmup_steps=up,
                                                      alpha=1e-4)
    return keras.optimizers.schedules.CosineDecay(0.0, max(epochs - 1, 1) * steps, warmup_target=lr,
                                                  warmup_steps=steps)


def run(cfg):
    """Train one setting, yielding its per-epoch curve of val class accuracy, mean IoU and accuracy@IoU50."""
    size, data_size, epochs, batch = cfg["size"], cfg.get("data_size", 64), cfg.get("epochs", 8), cfg.get("batch", 32)
    (x, yl, yb), (vx, vl, vb) = load("train", data_size, size), load("val", data_size, size)
    keras.utils.set_random_seed(cfg.get("seed", 0))
    task = get_task("localization", cfg.get("head", {}))
    model = task.build_model("mobilenet_v2", (size, size, 3), 4, cfg.get("options", {"alpha": 0.5}))
    steps = len(x) // batch
    schedule = schedule_for(cfg, steps, epochs)
    opt = (keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True) if cfg.get("opt") == "sgd"
           else keras.optimizers.AdamW(schedule, weight_decay=cfg.get("wd", 0.0005)))
    model.compile(optimizer=opt, **task.compile_args(model, label_smoothing=cfg.get("label_smoothing", 0.0)))
    one_hot = bool(cfg.get("label_smoothing"))
    rng = np.random.default_rng(cfg.get("seed", 0))
    curve = []
    for epoch in range(epochs):
        t = time.time()
        order = rng.permutation(len(x))
        for s in range(0, len(order) - batch + 1, batch):
            idx = order[s:s + batch]
            xb, bb = x[idx].copy(), yb[idx].copy()
            flip = rng.random(batch) < 0.5
            xb[flip] = xb[flip][:, :, ::-1]
            x0 = bb[flip, 1].copy()
            bb[flip, 1], bb[flip, 3] = 1 - bb[flip, 3], 1 - x0
            label = np.eye(4, dtype="float32")[yl[idx]] if one_hot else yl[idx]
            model.train_on_batch(xb, {"label": label, "box": bb})
        pred = model.predict(vx, batch_size=256, verbose=0)
        correct = pred["label"].argmax(-1) == vl
        ious = np.asarray(box_iou(vb, pred["box"]))
        curve.append({"epoch": epoch + 1, "s": round(time.time() - t, 1), "acc": round(float(correct.mean()), 3),
                      "iou": round(float(ious.mean()), 3), "acc_iou50": round(float((correct & (ious >= 0.5)).mean()), 3)})
        print(json.dumps(cfg), curve[-1], flush=True)
        yield curve


if __name__ == "__main__":
    name = sys.argv[2] if len(sys.argv) > 2 else "gpu_loc"
    results = {"devices": [str(d) for d in jax.devices()]}
    for cfg in json.loads(sys.argv[1]):
        for curve in run(cfg):
            results[json.dumps(cfg)] = curve
            json.dump(results, open(os.path.join(out, f"{name}.json"), "w"), indent=1)
