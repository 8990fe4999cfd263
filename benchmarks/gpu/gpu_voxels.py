"""GPU sweep under KERAS_BACKEND=jax: which voxel-head setting of the solids recipe reaches voxel IoU >= 0.6 (val,
threshold 0.5) within an epoch count the 2-core CPU affords; also mixed_float16 against float32."""
import json, os, sys, time

import numpy as np
import keras
import jax
from PIL import Image

from convforge.tasks import get_task

out = os.environ["OUT"]
# The solids set written by `convforge data solids data/solids64 --n 4000 --size 64 --voxels 32` on the CPU
# machine, packed (images uint8, grids bit-packed along z).
packed = np.load(".device/solids64.npz")
MEAN, STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")
gen_s = 0.0


def load(split):
    x = packed[f"{split}_x"].astype("float32")
    y = np.unpackbits(packed[f"{split}_y"], axis=-1).astype("float32")
    return (x / 255.0 - MEAN) / STD, y


(x, y), (vx, vy) = load("train"), load("val")
limit = int(os.environ.get("LIMIT", 0)) or None  # a few examples, to try the script on a CPU first
(x, y), (vx, vy) = (x[:limit], y[:limit]), (vx[:limit], vy[:limit])
results = {"devices": [str(d) for d in jax.devices()], "generate_s": gen_s, "train": len(x), "val": len(vx)}
for cfg in json.loads(sys.argv[1]):
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(cfg.get("policy", "float32"))
    head = {"name": "voxels", "voxel_size": 32, **cfg.get("head", {})}
    task = get_task("shape3d", head)
    model = task.build_model("resnet18", (64, 64, 3), 6, {"widths": cfg.get("widths", [16, 32, 64, 128])})
    epochs, steps = cfg.get("epochs", 16), len(x) // 32
    lr = cfg.get("lr", 0.002)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, (epochs - 1) * steps, warmup_target=lr, warmup_steps=steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.0001), **task.compile_args(model))
    t = time.time()
    hist = model.fit(x, y, batch_size=32, epochs=epochs, validation_data=(vx, vy), verbose=0)
    keras.config.set_dtype_policy("float32")
    row = {**cfg, "seconds": round(time.time() - t, 1), "params": model.count_params(),
           "val_voxel_iou": [round(v, 4) for v in hist.history["val_voxel_iou"]],
           "loss": [round(v, 4) for v in hist.history["loss"]]}
    results.setdefault("runs", []).append(row)
    print(json.dumps({k: (v[-1] if isinstance(v, list) and k in ("val_voxel_iou", "loss") else v) for k, v in row.items()}), flush=True)
    json.dump(results, open(f"{out}/gpu_voxels.json", "w"), indent=1)
