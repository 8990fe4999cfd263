"""What the per-task benchmark tables (benchmarks/detection.py, segmentation.py, keypoints.py) read from a shipped
recipe: its newest trained run (trained on request), the size of the model that run saved, and its exports'
metric and latency."""
import json
import pathlib

from convforge.errors import one_line


def newest_run(recipe, recipe_path, train=False, root=None):
    """(run folder, its metrics.json) of a recipe's newest run with a model, training one first when there is
    none and `train`; (None, a line saying how to train it) when there is none."""
    import convforge
    from convforge.train.trainer import latest_run_dir

    run = latest_run_dir(recipe.name)
    if (run is None or not (run / "model.keras").exists()) and train:
        print(f"{recipe.name}: training (no run yet)", flush=True)
        run = pathlib.Path(convforge.train(recipe, verbose=0)["run_dir"])
    if run is None or not (run / "model.keras").exists():
        shown = pathlib.Path(recipe_path)
        shown = shown.relative_to(root) if root is not None and shown.is_relative_to(root) else shown
        return None, f"no trained run: convforge train {shown}"
    return run, json.loads((run / "metrics.json").read_text())


def model_size(model):
    """{"params", "macs"} of a model ("macs_note" instead of "macs" where the MAC walker cannot follow a layer)."""
    from convforge import convmath

    size = {"params": convmath.count_params(model)["total"]}
    try:
        size["macs"] = int(convmath.count_macs(model))
    except Exception as error:  # a layer the walker cannot follow leaves the cell empty, with the reason
        size["macs_note"] = one_line(error)
    return size


QUANTIZED = ("tflite_fp16", "tflite_dynamic", "tflite_int8")


def measured_row(recipe_path, row, train=False, root=None):
    """`row` (the table's descriptive cells) completed for one recipe: its newest run's headline metric (`value`)
    and training time, its TFLite fp16, dynamic-range and int8 exports' metric judged on the whole val split
    (`<format>_value`), params and MACs, and batch-1 latency in Keras and LiteRT fp32 / int8 (`<name>_ms`)."""
    import tempfile

    import keras

    from convforge.bench.export_speed import latencies_in_turns
    from convforge.modelfile import load_model
    from convforge.recipes import load_recipe
    from convforge.runs import export_run
    from convforge.tasks import get_task
    from convforge.train.datasets import val_data

    recipe = load_recipe(recipe_path)
    task = get_task(recipe.task, recipe.head)
    row = {**row, "task": recipe.task, "backbone": recipe.model.architecture,
           "input": "x".join(map(str, recipe.model.input_shape)), "metric": task.headline_metric, "error": None}
    run, metrics = newest_run(recipe, recipe_path, train, root)
    if run is None:
        return {**row, "error": metrics}
    root = pathlib.Path(root) if root is not None else None
    row.update(run=str(run.relative_to(root)) if root is not None and run.is_relative_to(root) else str(run),
               value=metrics.get(f"val_{task.headline_metric}"), train_seconds=metrics.get("seconds"),
               epochs=metrics.get("epochs_completed"), precision=metrics.get("precision"))
    model = load_model(run / "model.keras")
    row.update(model_size(model))
    val, _ = val_data(recipe)
    image = next(iter(val))[0].numpy()[:1].astype("float32")
    with tempfile.TemporaryDirectory(prefix="convforge-bench-") as tmp:
        exported = export_run(run, out=tmp, formats=["tflite", *QUANTIZED], fail_on_drop=False, progress=None)
        for artifact in exported["card"]["artifacts"]:
            row[f"{artifact['format']}_value"] = (artifact["check"].get("metric") or {}).get("value")
        paths = {fmt: exported["paths"][fmt] for fmt in ("tflite", "tflite_int8")}
        times, notes = latencies_in_turns(model, image, paths)
    row.update({f"{fmt}_note": note for fmt, note in notes.items()})
    row.update({f"{name}_ms": ms for name, ms in times.items()})
    keras.backend.clear_session()
    return row


def recipe_table(description, folder, measure, failed_row, out_dir, stem, render, argv=None):
    """The command line of a per-task table: measure each recipe named (default: every recipe in `folder`, or in
    each of a list of folders), a failure becoming its row's error, then write out_dir/<stem>.json and <stem>.md
    (render(result))."""
    import argparse

    from convforge.bench.compare import _machine

    parser = argparse.ArgumentParser(description=description)
    folders = [pathlib.Path(f) for f in (folder if isinstance(folder, (list, tuple)) else [folder])]
    parser.add_argument("recipes", nargs="*", help=f"recipes (default: {', '.join(f'{f}/*.yaml' for f in folders)})")
    parser.add_argument("--train", action="store_true", help="train recipes that have no run yet")
    parser.add_argument("--merge", action="store_true", help="keep the other recipes' rows of the existing table "
                                                             "(measure only those named)")
    args = parser.parse_args(argv)
    paths = [pathlib.Path(p).resolve() for p in args.recipes] or [p for f in folders for p in sorted(f.glob("*.yaml"))]
    machine = _machine()
    rows = []
    for i, path in enumerate(paths, 1):
        try:
            row = measure(path, args.train)
        except Exception as error:  # one recipe's failure is its row's, not the table's
            row = {**failed_row(path), "error": one_line(error)}
        rows.append(row)
        print(f"[{i}/{len(paths)}] {json.dumps(row)}", flush=True)
    out_dir = pathlib.Path(out_dir)
    previous = out_dir / f"{stem}.json"
    if args.merge and previous.exists():
        # The table keeps its order: a measured recipe replaces its old row, a new one is added at the end.
        fresh = {r["recipe"]: r for r in rows}
        old = json.loads(previous.read_text())["rows"]
        rows = [fresh.pop(r["recipe"], r) for r in old] + list(fresh.values())
    result = {"machine": machine, "rows": rows}
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / f"{stem}.md").write_text(render(result))
    print(f"wrote {out_dir / f'{stem}.md'}")
    return result
