"""Trained runs as users point at them: a recipe (its newest run), a run folder or a .keras file; evaluated on
the val split and exported with everything the run saved. The `convforge evaluate` and `export` commands and the
Python API (`convforge.evaluate`, `convforge.export_run`) are these functions.

Examples:
    >>> metrics = convforge.evaluate("recipes/classification/lenet5_digits.yaml")   # doctest: +SKIP
    >>> convforge.export_run("runs/lenet5_digits/20261126-101500", out="saved_models/digits")  # doctest: +SKIP
"""
import contextlib
import dataclasses
import functools
import json
import os
import pathlib


from convforge.atomic import write_text
from convforge.errors import ConvforgeError


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained model and what came with it: its run folder and resolved recipe, when it has them."""

    model_path: pathlib.Path
    run_dir: pathlib.Path | None
    recipe: object  # a Recipe, or None for a bare .keras
    recipe_file: str | None

    def saved(self, name):
        """A JSON file the run saved beside its model (preprocessing.json, class_names.json), or None."""
        path = self.model_path.parent / name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# The model file of each direction a run can hold: a translation run saves its B -> A generator beside model.keras.
DIRECTIONS = {"a2b": "model.keras", "b2a": "model_b2a.keras"}


def find_run(source, overrides=(), direction="a2b"):
    """Resolve a recipe (.yaml: its newest run, read with the overrides it was trained with), a run folder or a
    .keras file into a Run; raise ConvforgeError when there is no trained model there. direction "b2a" picks a
    translation run's B -> A generator (model_b2a.keras)."""
    if direction not in DIRECTIONS:
        raise ConvforgeError(f"direction {direction!r} is not accepted; accepted: {', '.join(DIRECTIONS)}")
    run = _find_run(source, overrides)
    if direction == "a2b":
        return run
    other = run.model_path.parent / DIRECTIONS[direction]
    if run.run_dir is None or not other.exists():
        raise ConvforgeError(f"--direction {direction} needs a translation run, which saves "
                             f"{DIRECTIONS[direction]} beside model.keras; {str(source)!r} has none")
    return dataclasses.replace(run, model_path=other)


def _find_run(source, overrides):
    """find_run's A -> B (or only) model."""
    from convforge.recipes import load_recipe
    from convforge.train.trainer import latest_run_dir

    path = pathlib.Path(source)
    if path.suffix in (".yaml", ".yml"):
        recipe = load_recipe(path, overrides=overrides)
        run = latest_run_dir(recipe.name)
        if run is None or not (run / "model.keras").exists():
            raise ConvforgeError(f"no trained run of {recipe.name!r}: run `convforge train {source}` first, or "
                                 f"pass a model file")
        # The run's resolved copy holds the --set overrides it was trained with (input size, data, ...).
        if (run / "recipe.yaml").exists() and not overrides:
            recipe = load_recipe(run / "recipe.yaml")
        return Run(run / "model.keras", run, recipe, os.path.abspath(source))
    if path.is_dir():
        if not (path / "model.keras").exists():
            raise ConvforgeError(f"{source!r} is not a run folder: it has no model.keras")
        recipe_file = path / "recipe.yaml"
        recipe = load_recipe(recipe_file, overrides=overrides) if recipe_file.exists() else None
        return Run(path / "model.keras", path, recipe, str(recipe_file.resolve()) if recipe else None)
    if path.suffix == ".keras":
        if not path.is_file():
            raise ConvforgeError(f"model file {source!r} does not exist")
        return Run(path, None, None, None)
    raise ConvforgeError(f"{source!r} is not a recipe (.yaml), a run folder or a .keras model")


def evaluate(source, *, weights=None, overrides=(), precision="trained", out=None, detector=None):
    """The task's metrics of a trained model on its recipe's val split, as {"val_<metric>": value}.

    source: a recipe, a run folder (with its recipe.yaml) or, with `weights`, the recipe to read data from.
    precision: "trained" or "float32" (a mixed-precision model's float32 copy). out: a folder (created if
    missing) to write metrics.json into, with the task's own names ("AP", "accuracy", ...), beside what the task
    writes there (detection: detections.json, COCO results in the dataset's ids and original-image pixels, and
    annotations.json where the ground truth has no COCO file; "annotations" in metrics.json names the file
    scored against); a failed evaluation leaves no folder it created. Default: evaluation.json beside the model,
    with the val_ names. Only the val pipeline is built.
    detector: for a keypoint model trained on crops (head.top_down), a person detector (run folder or .keras):
    the val images then also go through convforge.topdown (detected boxes -> crops -> keypoints), and `oks_ap`
    is that pipeline's (`oks_boxes: detector`; the ground-truth boxes' AP stays as oks_ap_ground_truth_boxes).
    """
    from convforge.atomic import filling, write_json
    from convforge.precision import model_precision
    from convforge.recipes import load_recipe
    from convforge.modelfile import load_model
    from convforge.tasks import get_task
    from convforge.train.datasets import val_split

    if weights is not None:
        recipe = load_recipe(source, overrides=overrides) if str(source).endswith((".yaml", ".yml")) else \
            find_run(source, overrides).recipe
        model_path = pathlib.Path(weights)
        if not model_path.is_file():
            raise ConvforgeError(f"weights file {str(weights)!r} does not exist")
    else:
        run = find_run(source, overrides)
        recipe, model_path = run.recipe, run.model_path
    if recipe is None:
        raise ConvforgeError(f"{source!r} has no recipe to take the val split from; accepted: a recipe or a run "
                             f"folder with its recipe.yaml")
    task = get_task(recipe.task, recipe.head)
    with filling(out) if out is not None else contextlib.nullcontext() as folder:
        val, class_names, val_source = val_split(recipe)
        if val is None:
            raise ConvforgeError(f"{recipe.name}: data.val gives no validation split to evaluate on")
        model = load_model(model_path, precision)
        metrics = task.evaluate(task.inference_model(model), val, class_names, out_dir=folder, source=val_source)
        if recipe.train.adversarial is not None:
            from convforge.preprocessing import saved_beside
            from convforge.train.adversarial import robust_accuracy

            contract, _ = saved_beside(model_path, tuple(int(v) for v in model.inputs[0].shape[1:]))
            metrics.update(robust_accuracy(task.inference_model(model), val, contract, recipe.train.adversarial))
        if detector is not None:
            from convforge.topdown import TopDown

            if "oks_ap" in metrics:
                metrics["oks_ap_ground_truth_boxes"] = metrics["oks_ap"]
            metrics.update(TopDown(model_path, detector, precision=precision).evaluate(val_source, folder))
        head = {"weights": str(model_path), "precision": model_precision(model)}
        if folder is not None:
            # Written last: a metrics.json means the evaluation finished, its other files already in place.
            write_json(os.path.join(folder, "metrics.json"), {**head, **metrics})
    result = {**head, **{f"val_{k}": v for k, v in metrics.items()}}
    if folder is not None:
        return {**result, "out": folder}
    path = model_path.resolve().parent / "evaluation.json"
    write_text(path, json.dumps(result, indent=1) + "\n")
    return {**result, "out": str(path)}


def export_run(source, out=None, formats=None, *, calibration=None, with_preprocessing=False, allow_flex=False,
               opset=None, int8_io=None, fail_on_drop=True, progress=print, nms="graph", direction="a2b"):
    """Export a trained model (recipe, run folder or .keras) to every format, verified and judged on val.

    A run's recipe supplies the formats, thresholds, int8 calibration (un-augmented training images) and the
    val split every artifact is scored on; `calibration` (an image folder or .npy) serves a bare model.
    direction "b2a": a translation run's B -> A generator, calibrated on domain B's pictures and verified
    against Keras output by output (the val split's ground truth is A -> B's). Returns convforge.export's result.
    """
    import convforge.export as exporter
    from convforge.modelfile import load_model
    from convforge.tasks import get_task

    run = find_run(source, direction=direction)
    recipe = run.recipe
    model = load_model(run.model_path)
    formats = list(formats) if formats else (list(recipe.export.formats) if recipe else list(exporter.FORMATS))
    if out is None:
        out = (recipe.export.out_dir if recipe and recipe.export.out_dir else
               os.path.join("saved_models", recipe.name if recipe else run.model_path.parent.name))
        out = out if direction == "a2b" else f"{out}_{direction}"  # beside the A -> B export, not over it
    preprocessing, labels = run.saved("preprocessing.json"), run.saved("class_names.json") or None
    say = progress or (lambda *_: None)
    representative = validation = metric = None
    metric_name, thresholds, higher_is_better = "accuracy", {}, True
    if calibration and "tflite_int8" in formats:
        from convforge.export.calibration import UNIT_SCALE, calibration_images
        from convforge.export.saved_model import input_spec

        representative = calibration_images(calibration, input_spec(model), preprocessing)
        say(f"export: {len(representative)} calibration images from {calibration}"
            + ("" if preprocessing else f", normalized as {UNIT_SCALE}"))
    if recipe is not None:
        from convforge.train.datasets import representative_images, val_data

        task = get_task(recipe.task, recipe.head)
        if "tflite_int8" in formats and representative is None:
            section = "domain_b" if direction == "b2a" else "train"
            representative = representative_images(recipe, recipe.export.representative_size, section)
        val, class_names = val_data(recipe)
        if not task.scores_export(recipe, direction):
            val = None  # no ground truth to score this direction's pictures against: outputs are compared only
        if val is not None:
            # metric(predict, batches): the task's headline metric of any runtime's predictions on val
            validation, metric_name, higher_is_better = val, task.headline_metric, task.higher_is_better
            metric = functools.partial(task.score, class_names=class_names)
        thresholds = recipe.export.max_metric_drop()
    elif "tflite_int8" in formats and representative is None:
        raise ConvforgeError("tflite_int8 needs calibration images: pass --calibration IMAGE_FOLDER|INPUTS.npy, "
                             "export a recipe or a run folder with its recipe.yaml, or leave tflite_int8 out of "
                             "--formats")
    return exporter.export(
        model, out, formats, representative=representative, preprocessing=preprocessing,
        with_preprocessing=with_preprocessing and preprocessing is not None, allow_flex=allow_flex,
        opset=opset or (recipe.export.onnx_opset if recipe else 17),
        int8_io=int8_io or (recipe.export.int8_io if recipe else "int8"), validation=validation, metric=metric,
        labels=labels, metric_name=metric_name, higher_is_better=higher_is_better, max_metric_drop=thresholds,
        fail_on_drop=fail_on_drop,
        validation_size=recipe.export.validation_size if recipe else 1000, progress=progress,
        source={"model_path": str(run.model_path.resolve()),
                "run_dir": str(run.run_dir.resolve()) if run.run_dir is not None else None,
                "recipe": recipe.name if recipe else None, "recipe_file": run.recipe_file}, nms=nms)
