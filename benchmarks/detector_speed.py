"""Detectors side by side on this CPU: time per image of OverFeat's naive sliding-window loop (every window of the
image pyramid cropped and classified on its own), OverFeat convolutionalized (one pass per scale, the same
classifier and the same detections), R-CNN (selective-search proposals, the CNN once per warped proposal) and the
single-pass detectors for scale (Faster R-CNN, SSD, YOLO), each with its run's COCO AP and AP50 on val.

Each detector is its shipped recipe's newest run (runs/<recipe name>/<stamp>/model.keras, the inference model
with NMS); a recipe without a run is timed as its model untrained, and marked so (an untrained detector keeps
more boxes for NMS, so its time is not the trained one's). Images: the first N val images of each recipe's data,
normalized as in training, one image per call (batch 1) after a warm-up, through Keras' compiled predict; every
call is timed on one image per turn, all detectors in turns, and reported as the median over the images.
R-CNN's proposals are computed afresh for every image (the training-time memo is off) and also timed alone.
The naive loop's detections are checked against the convolutionalized model's on every timed image.

The CPU is shared with other jobs on this machine: the load average before and after is recorded next to the
numbers, which are only comparable within one run of this script.

Writes benchmarks/results/detector_speed.json and .md.
Run: python benchmarks/detector_speed.py [--images N] [--runs DIR] [--only ROW,...] [--out DIR]
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(__file__).parent / "results"
RECIPES = ROOT / "recipes" / "detection"
# (row name, recipe file stem, how it runs): "model" is the saved detector's own call, "naive" OverFeat's loop
# with a scale's windows in one classifier call, "naive_per_window" the literal loop: one call per window.
PER_WINDOW_IMAGES = 5  # the literal loop takes about a second an image
DETECTORS = (
    ("overfeat_naive_loop_per_window", "overfeat_alexnet_shapes", "naive_per_window"),
    ("overfeat_naive_loop", "overfeat_alexnet_shapes", "naive"),
    ("overfeat_convolutional", "overfeat_alexnet_shapes", "model"),
    ("rcnn", "rcnn_alexnet_shapes", "model"),
    ("faster_rcnn", "faster_rcnn_resnet18_shapes", "model"),
    ("ssd", "ssd_resnet18_shapes", "model"),
    ("yolo", "yolo_resnet18_shapes", "model"),
)


def cpu_name():
    """The CPU's model name as lscpu reports it (platform's guess without lscpu)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def detector(recipe, runs_root, num_classes):
    """(inference model, run folder or None, the run's metrics or {}) of a recipe: its newest run's model.keras,
    else its model built untrained for num_classes."""
    from convforge.modelfile import load_model
    from convforge.tasks import get_task
    from convforge.train.datasets import input_shape_of
    from convforge.train.trainer import latest_run_dir

    run = latest_run_dir(recipe.name, runs_root)
    if run is not None and (run / "model.keras").exists():
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        return load_model(run / "model.keras"), run, metrics
    task = get_task(recipe.task, recipe.head)
    model = task.build_model(recipe.model.architecture, input_shape_of(recipe), recipe.model.num_classes or num_classes,
                             recipe.model.options)
    return task.inference_model(model), None, {}


def val_images(recipe, count):
    """The first `count` val images of a recipe, normalized as its training saw them (count, H, W, C), and its
    class names."""
    from convforge.train.datasets import val_split

    dataset, class_names, _ = val_split(recipe)
    batches = []
    for images, _ in dataset:
        batches.append(np.asarray(images))
        if sum(len(b) for b in batches) >= count:
            break
    return np.concatenate(batches)[:count], class_names


class Timings:
    """Calls to time per image, run in turns: every call sees one image of its list per turn, so a change in the
    machine's load during the run reaches every row alike."""

    def __init__(self):
        self.jobs = []

    def add(self, row, field, run, images):
        """Time run(image[None]) on each of images into row[field] (ms, median over the images)."""
        self.jobs.append((row, field, run, images, []))

    def run(self, warmup=2):
        """Warm every call up, then time them all in turns."""
        for _, _, run, images, _ in self.jobs:
            for image in images[:warmup]:
                run(image[None])
        for turn in range(max(len(images) for _, _, _, images, _ in self.jobs)):
            for _, _, run, images, times in self.jobs:
                if turn < len(images):
                    start = time.perf_counter()
                    run(images[turn][None])
                    times.append(time.perf_counter() - start)
        for row, field, _, _, times in self.jobs:
            row[field] = round(1000 * float(np.median(times)), 2)
            if field == "ms_median":
                row["ms_per_image"] = round(1000 * float(np.mean(times)), 2)
                row["images_per_s"] = round(len(times) / float(np.sum(times)), 2)


def split_tail(model):
    """(the detector up to its raw predictions, its decoding and NMS alone) when it ends in a "decode" layer on
    the raw output and a "detections" NMS layer (SSD, YOLO, OverFeat, R-CNN), else None."""
    import keras

    from convforge.layers.detections import raw_detections_layer

    raw = raw_detections_layer(model)
    names = {layer.name for layer in model.layers}
    if raw is None or not {"decode", "detections"} <= names or model.get_layer("decode").input is not raw.output:
        return None
    inputs = keras.Input(raw.output.shape[1:], name="raw")
    tail = model.get_layer("detections")(*model.get_layer("decode")(inputs))
    return keras.Model(model.input, raw.output), keras.Model(inputs, tail)


def measure(row, how, model, images, timings):
    """Fill one row with what the detector processes per image, and queue its calls on `timings` (which write
    their times into the row): the whole detector (ms_median), and where split_tail applies the part up to the
    raw predictions (map_ms) and decoding + NMS (decode_nms_ms); R-CNN's selective search alone (proposal_ms)."""
    from convforge.heads import overfeat

    parts = split_tail(model)
    layers = {layer.name: layer for layer in model.layers}
    if "proposals" in layers:  # R-CNN: proposals afresh for every image, and timed alone
        proposals = layers["proposals"]
        proposals.memoize = False
        row["proposals_per_image"] = round(float(np.mean([proposals.propose(image[None])[1].sum()
                                                          for image in images])), 1)
        timings.add(row, "proposal_ms", proposals.propose, images)
    if row["detector"].startswith("overfeat"):
        row["windows_per_image"] = int(len(overfeat.windows_of(overfeat.spec_of(model))))
    if how.startswith("naive"):
        classifier, tail = overfeat.window_classifier(model), overfeat.detection_tail(model)
        step = 1 if how == "naive_per_window" else None
        if step:
            images = images[:PER_WINDOW_IMAGES]
            row["images"] = len(images)
        timings.add(row, "ms_median", lambda x: overfeat.naive_detect(model, x, classifier, tail, batch_size=step),
                    images)
        timings.add(row, "map_ms", lambda x: overfeat.naive_class_maps(model, x, classifier, batch_size=step),
                    images)
        # The loop's detections are the one-pass model's, image by image.
        worst, same = 0.0, True
        for image in images:
            a = overfeat.naive_detect(model, image[None], classifier, tail, batch_size=step)
            b = {k: np.asarray(v) for k, v in model.predict_on_batch(image[None]).items()}
            same &= bool(np.array_equal(a["num_detections"], b["num_detections"]))
            n = int(b["num_detections"][0])
            worst = max(worst, float(np.abs(a["boxes"][0, :n] - b["boxes"][0, :n]).max(initial=0.0)))
        row["same_detections_as_convolutional"] = same
        row["max_box_difference"] = worst
    else:
        timings.add(row, "ms_median", model.predict_on_batch, images)
        if parts is not None:
            timings.add(row, "map_ms", parts[0].predict_on_batch, images)
    if parts is not None:
        raws = np.stack([np.asarray(parts[0].predict_on_batch(image[None]))[0] for image in images])
        timings.add(row, "decode_nms_ms", parts[1].predict_on_batch, raws)


def main():
    """Time every detector whose recipe is shipped and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="val images timed per detector")
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="the runs folder to take trained models from")
    parser.add_argument("--only", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--out", default=str(OUT), help="the folder detector_speed.json and .md are written to")
    args = parser.parse_args()
    import keras

    from convforge.recipes import load_recipe

    os.chdir(ROOT)  # recipes name their data relative to the repository
    wanted = set(filter(None, args.only.split(",")))
    load_before = os.getloadavg()
    rows, cache, timings = [], {}, Timings()
    for name, stem, how in DETECTORS:
        path = RECIPES / f"{stem}.yaml"
        if (wanted and name not in wanted) or not path.exists():
            continue
        recipe = load_recipe(path)
        if stem not in cache:
            keras.utils.set_random_seed(0)
            images, class_names = val_images(recipe, args.images)
            cache[stem] = (*detector(recipe, args.runs, len(class_names)), images)
        model, run, metrics, images = cache[stem]
        row = {"detector": name, "recipe": stem, "architecture": recipe.model.architecture,
               "input": list(images.shape[1:]), "images": len(images),
               "model": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run) if run else "untrained",
               "AP": metrics.get("val_AP"), "AP50": metrics.get("val_AP50"),
               "train_seconds": metrics.get("seconds")}
        measure(row, how, model, images, timings)
        rows.append(row)
    timings.run()
    for row in rows:
        print(f"{row['detector']}: {row['ms_median']} ms/image ({row['model']})", flush=True)
    result = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detector_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "detector_speed.md").write_text(table(result))


def table(result):
    """The results as a Markdown table with the machine under it."""
    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| detector | recipe | ms / image (median) | mean ms | images / s | to raw predictions, ms | "
             "decode + NMS, ms | AP | AP50 | per image | model |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    count = max([r["images"] for r in result["rows"]], default=0)
    for r in result["rows"]:
        work = (f"{r['windows_per_image']} windows" if "windows_per_image" in r else
                f"{r['proposals_per_image']} proposals ({r['proposal_ms']:.1f} ms of selective search)"
                if "proposals_per_image" in r else "one pass")
        if r["images"] != count:
            work += f", timed on {r['images']} images"
        if "same_detections_as_convolutional" in r:
            work += (", the same detections as convolutional" if r["same_detections_as_convolutional"] else
                     ", DIFFERENT detections from convolutional")
        lines.append(f"| {r['detector']} | {r['recipe']} | {r['ms_median']:.1f} | {r['ms_per_image']:.1f} | "
                     f"{r['images_per_s']:.1f} | {number(r.get('map_ms'), 1)} | {number(r.get('decode_nms_ms'), 1)} | "
                     f"{number(r['AP'])} | {number(r['AP50'])} | {work} | {r['model']} |")
    lines += ["", f"{result['cpu']}, {result['cpu_count']} cores, shared with other jobs: load average "
                  f"{result['load_average_before'][0]} before, {result['load_average_after'][0]} after. Batch 1, "
                  f"medians over the first {count} val images of each recipe's data, all detectors timed in turns; "
                  f"AP and AP50: COCO on the 800 val images, from each run's metrics.json."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
