"""The detectors side by side: for each shipped recipe in recipes/detection/, its newest trained run's COCO AP,
training time, the model's size and MACs, and batch-1 latency per image in Keras and in LiteRT (fp32 and int8
with our NMS layer, and fp32 ending in TFLite's own TFLite_Detection_PostProcess op).

Runs are trained first where a recipe has none (`--train`; up to 15 minutes each on 2 cores). Writes
benchmarks/results/detection.json and detection.md (the README's table). Run: make bench, or
    python benchmarks/detection.py [--train] [RECIPE ...]
"""
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(__file__).parent / "results"


def measure(recipe_path, train=False):
    """One detector's row: its run's metrics and training time, params, MACs and per-image latencies."""
    import keras

    import convforge
    from convforge.bench.export_speed import latencies_in_turns
    from convforge.bench.recipe_runs import model_size, newest_run
    from convforge.errors import one_line
    from convforge.modelfile import load_model
    from convforge.recipes import load_recipe
    from convforge.train.datasets import representative_images, val_data

    recipe = load_recipe(recipe_path)
    row = {"recipe": recipe_path.name, "head": recipe.head["name"], "backbone": recipe.model.architecture,
           "input": "x".join(map(str, recipe.model.input_shape)), "error": None}
    run, metrics = newest_run(recipe, recipe_path, train, ROOT)
    if run is None:
        return {**row, "error": metrics}
    row.update(run=str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
               AP=metrics.get("val_AP"), AP50=metrics.get("val_AP50"), train_seconds=metrics.get("seconds"),
               epochs=metrics.get("epochs_completed"), precision=metrics.get("precision"))
    model = load_model(run / "model.keras")
    row.update(model_size(model))
    val, _ = val_data(recipe)
    image = next(iter(val))[0].numpy()[:1].astype("float32")
    paths = {}
    with tempfile.TemporaryDirectory(prefix="convforge-detection-bench-") as tmp:
        for fmt in ("tflite", "tflite_int8", "tflite_postprocess_op"):
            try:
                rep = representative_images(recipe, 64) if fmt == "tflite_int8" else None
                paths.update(convforge.export(model, pathlib.Path(tmp) / fmt, formats=[fmt], representative=rep,
                                              verify=False, progress=None)["paths"])
            except Exception as error:
                row[f"{fmt}_note"] = one_line(error)
        times, notes = latencies_in_turns(model, image, paths)
    row.update({f"{fmt}_note": note for fmt, note in notes.items()})
    row.update({f"{name}_ms": ms for name, ms in times.items()})
    keras.backend.clear_session()
    return row


def render(result):
    """The Markdown table of the rows, with the machine under it."""
    from convforge.numbers import cell

    lines = ["| detector | backbone, input | params | GMACs | AP | AP50 | train s (epochs) | Keras ms | "
             "TFLite fp32 ms | TFLite int8 ms | TFLite fp32, NMS op ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if r.get("error"):
            lines.append(f"| {r['head']} | {r['backbone']}, {r['input']} | {r['error']} ||||||||| ")
            continue
        lines.append(
            f"| {r['head']} | {r['backbone']}, {r['input']} | {r['params']:,} | "
            f"{cell(r.get('macs') and r['macs'] / 1e9, '{:.3g}')} | {cell(r['AP'], '{:.3f}')} | "
            f"{cell(r['AP50'], '{:.3f}')} | {cell(r['train_seconds'], '{:.0f}')} ({r['epochs']}) | "
            f"{cell(r.get('keras_ms'), '{:.2f}')} | {cell(r.get('tflite_ms'), '{:.2f}')} | "
            f"{cell(r.get('tflite_int8_ms'), '{:.2f}')} | {cell(r.get('tflite_postprocess_op_ms'), '{:.2f}')} |")
    notes = [f"- {r['head']}: {k.replace('_note', '')}: {v}" for r in result["rows"] for k, v in r.items()
             if k.endswith("_note")]
    machine = result["machine"]
    lines += ["", f"COCO AP and AP50 on each recipe's 800 val images (pycocotools), from its newest run; latency is the "
              f"median batch-1 call of the saved inference model (decoding and NMS included), 1 runtime thread for "
              f"LiteRT, measured in turns. NMS op: the same graph with TFLite_Detection_PostProcess in place of our "
              f"NMS layer (export format tflite_postprocess_op; the same detections). {machine['description']}; 1-minute load average "
              f"{machine['load_average']} when it began (the machine may be shared)."]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv=None):
    """Measure every shipped detection recipe (or those named) and write the JSON and Markdown tables."""
    from convforge.bench.recipe_runs import recipe_table

    recipe_table(__doc__.splitlines()[0], ROOT / "recipes" / "detection", measure,
                 lambda path: {"recipe": path.name, "head": path.stem, "backbone": "", "input": ""}, OUT, "detection", render, argv)


if __name__ == "__main__":
    os.chdir(ROOT)  # recipes name their data and run folders relative to the project root
    main(sys.argv[1:])
