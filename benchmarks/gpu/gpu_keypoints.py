"""GPU check under KERAS_BACKEND=jax: the face keypoint heads train alike in mixed_float16 and float32 (val NME,
inter-ocular, per epoch; seconds per epoch after compilation)."""
import json, os, sys, time

import numpy as np
import keras
import jax

from convforge.data.faces import LANDMARK_NAMES
from convforge.evaluate.keypoints import nme
from convforge.tasks import get_task

out = os.environ["OUT"]
# 1600 train and 400 val images of the faces set (`convforge data faces data/faces96 --n 4000 --size 96`), packed.
packed = np.load(".device/faces96.npz")
MEAN, STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")
x, y = (packed["train_x"] / 255.0 - MEAN) / STD, packed["train_y"]
vx, vy = (packed["val_x"] / 255.0 - MEAN) / STD, packed["val_y"]
results = {"devices": [str(d) for d in jax.devices()], "train": len(x), "val": len(vx)}


class NME(keras.callbacks.Callback):
    def __init__(self, task):
        super().__init__()
        self.task, self.values, self.times, self.t = task, [], [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.time() - self.t)
        decoded = self.task.inference_model(self.model).predict(vx, batch_size=100, verbose=0)
        self.values.append(round(nme(decoded["keypoints"] * 96, vy[..., :2] * 96, vy[..., 2], LANDMARK_NAMES)["nme"], 4))


for cfg in json.loads(sys.argv[1]):
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(cfg["policy"])
    task = get_task("keypoints", cfg["head"])
    model = task.build_model("resnet18", (96, 96, 3), 68, {"widths": [16, 32, 64, 128]})
    epochs, steps = cfg.get("epochs", 12), len(x) // 32
    schedule = keras.optimizers.schedules.CosineDecay(0.0, (epochs - 1) * steps, warmup_target=0.002, warmup_steps=steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.0001), **task.compile_args(model))
    track = NME(task)
    hist = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[track])
    keras.config.set_dtype_policy("float32")
    row = {**cfg, "val_nme": track.values, "epoch_seconds": [round(t, 2) for t in track.times],
           "loss": [round(v, 4) for v in hist.history["loss"]], "output_dtype": str(model.output.dtype)}
    results.setdefault("runs", []).append(row)
    print(json.dumps({**cfg, "val_nme": track.values[-1], "epoch_s": row["epoch_seconds"][-1], "loss": row["loss"][-1]}), flush=True)
    json.dump(results, open(f"{out}/gpu_keypoints.json", "w"), indent=1)
