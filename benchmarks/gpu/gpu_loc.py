"""GPU sweep under KERAS_BACKEND=jax: which MobileNetV2 localization setting learns the shapes (class accuracy and
accuracy@IoU50 per epoch on val), to pick one worth timing on the 2-core CPU."""
import json, os, sys, time

import numpy as np
import keras
import jax
from PIL import Image

from convforge.data.shapes import generate_shapes
from convforge.tasks import get_task

out = os.environ["OUT"]
generate_shapes("/tmp/shapes64_6k", n=6000, size=64, seed=0, objects=(1, 1))


def load(split, size):
    data = json.load(open(f"/tmp/shapes64_6k/annotations/instances_{split}.json"))
    cats = sorted(c["id"] for c in data["categories"])
    ann = {a["image_id"]: a for a in data["annotations"]}
    xs, labels, boxes = [], [], []
    for im in data["images"]:
        img = Image.open(f"/tmp/shapes64_6k/images/{split}/{im['file_name']}").convert("RGB")
        if size != 64:
            img = img.resize((size, size), Image.BILINEAR)
        xs.append(np.asarray(img))
        a = ann[im["id"]]
        x, y, w, h = a["bbox"]
        labels.append(cats.index(a["category_id"]))
        boxes.append([y / 64, x / 64, (y + h) / 64, (x + w) / 64])
    x = (np.stack(xs).astype("float32") / 255.0 - np.array([0.485, 0.456, 0.406], "float32")) / np.array(
        [0.229, 0.224, 0.225], "float32")
    return x, np.array(labels, "int32"), np.array(boxes, "float32")


def iou(a, b):
    ih = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ih * iw
    area = lambda t: np.clip(t[:, 2] - t[:, 0], 0, None) * np.clip(t[:, 3] - t[:, 1], 0, None)
    return inter / (area(a) + area(b) - inter + 1e-7)


results = {"devices": [str(d) for d in jax.devices()]}
configs = json.loads(sys.argv[1])
cache = {}
for cfg in configs:
    size, epochs = cfg["size"], cfg.get("epochs", 8)
    if size not in cache:
        cache[size] = (load("train", size), load("val", size))
    (x, yl, yb), (vx, vl, vb) = cache[size]
    keras.utils.set_random_seed(0)
    task = get_task("localization", cfg.get("head", {}))
    model = task.build_model("mobilenet_v2", (size, size, 3), 4, cfg.get("options", {"alpha": 0.5}))
    steps = len(x) // 32
    lr = cfg.get("lr", 0.003)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, max(epochs - 1, 1) * steps, warmup_target=lr, warmup_steps=steps)
    opt = (keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True) if cfg.get("opt") == "sgd"
           else keras.optimizers.AdamW(schedule, weight_decay=0.0005))
    model.compile(optimizer=opt, **task.compile_args(model))
    rng = np.random.default_rng(0)
    curve = []
    for epoch in range(epochs):
        t = time.time()
        order = rng.permutation(len(x))
        for s in range(0, len(order) - 31, 32):
            idx = order[s:s + 32]
            xb, bb = x[idx].copy(), yb[idx].copy()
            flip = rng.random(32) < 0.5
            xb[flip] = xb[flip][:, :, ::-1]
            x0 = bb[flip, 1].copy()
            bb[flip, 1], bb[flip, 3] = 1 - bb[flip, 3], 1 - x0
            model.train_on_batch(xb, {"label": yl[idx], "box": bb})
        pred = model.predict(vx, batch_size=256, verbose=0)
        correct = pred["label"].argmax(-1) == vl
        ious = iou(vb, pred["box"])
        curve.append({"epoch": epoch + 1, "s": round(time.time() - t, 1), "acc": round(float(correct.mean()), 3),
                      "iou": round(float(ious.mean()), 3), "acc_iou50": round(float((correct & (ious >= 0.5)).mean()), 3)})
        print(json.dumps(cfg), curve[-1], flush=True)
    results[json.dumps(cfg)] = curve
    json.dump(results, open(os.path.join(out, "gpu_loc.json"), "w"), indent=1)
