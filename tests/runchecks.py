"""What every finished training run holds, whichever test trained it (shared by the every-recipe test and the
task tests that train a shipped recipe themselves, so that no recipe has to be trained twice)."""
import csv
import json
import math
import zipfile
from pathlib import Path

import keras

from convforge.tasks import get_task

# Each task's headline metric comes with these companions; detection's are COCO's.
COMPANIONS = {"detection": {"val_AP", "val_AP75", "val_AR100"},
              "instance_segmentation": {"val_AP", "val_AP75", "val_box_AP50", "mask_loss"},
              "localization": {"val_accuracy", "val_iou", "box_iou", "val_box_iou"},
              "segmentation": {"val_pixel_accuracy", "mean_iou"},
              "keypoints": {"val_pck", "val_mean_error", "point_error"},
              "shape3d": {"val_best_voxel_iou", "voxel_iou"},
              "style": {"val_style_loss", "val_content_loss", "val_unstyled_style_loss"}}
# GoogLeNet's aux heads dropped; localization gives label and box, detection its four NMS outputs, keypoints
# the points and their scores.
OUTPUTS = {"localization": 2, "detection": 4, "instance_segmentation": 5, "keypoints": 2}


def history_rows(run_dir):
    """The rows of a run's history.csv, one dict per finished epoch."""
    with open(Path(run_dir) / "history.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_finished_run(run_dir, recipe, epochs):
    """Assert the run's metrics (headline and companions, finite), one history row per epoch, the files a run
    keeps, and a model.keras that loads alone with the recipe's inputs and the task's outputs."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs
    assert metrics["replicas"] == 1
    expected = {"loss", "val_loss", f"val_{get_task(recipe.task, recipe.head).headline_metric}"}
    expected |= COMPANIONS.get(recipe.task, {"val_accuracy"})
    assert expected <= set(metrics), sorted(metrics)
    assert all(math.isfinite(metrics[k]) for k in expected)
    assert len(history_rows(run_dir)) == epochs
    for name in ("best.keras", "recipe.yaml", "class_names.json", "preprocessing.json", "backup"):
        assert (run_dir / name).exists(), name
    # model.keras is the inference model alone (no optimizer, schedule or losses to deserialize).
    with zipfile.ZipFile(run_dir / "model.keras") as z:
        assert not json.loads(z.read("config.json")).get("compile_config")
    model = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    # Every input is a picture of the recipe's size (AdaIN takes two: content and style).
    assert all(tuple(i.shape[1:]) == tuple(recipe.model.input_shape) for i in model.inputs)
    assert len(model.outputs) == OUTPUTS.get(recipe.task, 1)
