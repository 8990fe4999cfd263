"""The segmentation decoders and upsampling modes side by side: for each shipped recipe in recipes/segmentation/, its
newest trained run's headline metric (val mean IoU; segm AP50 for Mask R-CNN), the same metric of its TFLite
fp16, dynamic-range and full-int8 exports judged on the whole val split, training time, the model's size and
MACs, and batch-1 latency in Keras and in LiteRT (fp32 and int8).

Runs are trained first where a recipe has none (`--train`; up to 15 minutes each on 2 cores). Writes
benchmarks/results/segmentation.json and segmentation.md (the README's table). Run: make bench, or
    python benchmarks/segmentation.py [--train] [RECIPE ...]
"""
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(__file__).parent / "results"
QUANTIZED = ("tflite_fp16", "tflite_dynamic", "tflite_int8")


def measure(recipe_path, train=False):
    """One recipe's row: its run's metric and training time, its quantized exports' metric, params, MACs and
    per-image latencies."""
    import keras

    from convforge.bench.export_speed import latencies_in_turns
    from convforge.bench.recipe_runs import model_size, newest_run
    from convforge.modelfile import load_model
    from convforge.recipes import load_recipe
    from convforge.runs import export_run
    from convforge.tasks import get_task
    from convforge.train.datasets import val_data

    recipe = load_recipe(recipe_path)
    task = get_task(recipe.task, recipe.head)
    head = recipe.head or {}
    row = {"recipe": recipe_path.name, "task": recipe.task, "decoder": head.get("name"),
           "upsampling": head.get("upsampling", "–"), "backbone": recipe.model.architecture,
           "input": "x".join(map(str, recipe.model.input_shape)), "metric": task.headline_metric, "error": None}
    run, metrics = newest_run(recipe, recipe_path, train, ROOT)
    if run is None:
        return {**row, "error": metrics}
    row.update(run=str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
               value=metrics.get(f"val_{task.headline_metric}"), train_seconds=metrics.get("seconds"),
               epochs=metrics.get("epochs_completed"), precision=metrics.get("precision"))
    model = load_model(run / "model.keras")
    row.update(model_size(model))
    val, _ = val_data(recipe)
    image = next(iter(val))[0].numpy()[:1].astype("float32")
    with tempfile.TemporaryDirectory(prefix="convforge-segmentation-bench-") as tmp:
        exported = export_run(run, out=tmp, formats=["tflite", *QUANTIZED], fail_on_drop=False, progress=None)
        for artifact in exported["card"]["artifacts"]:
            row[f"{artifact['format']}_value"] = (artifact["check"].get("metric") or {}).get("value")
        paths = {fmt: exported["paths"][fmt] for fmt in ("tflite", "tflite_int8")}
        times, notes = latencies_in_turns(model, image, paths)
    row.update({f"{fmt}_note": note for fmt, note in notes.items()})
    row.update({f"{name}_ms": ms for name, ms in times.items()})
    keras.backend.clear_session()
    return row


def render(result):
    """The Markdown tables of the rows (semantic, then instance segmentation), with the machine under them."""
    from convforge.numbers import cell

    header = ["| decoder | upsampling | backbone, input | params | GMACs | {m} | fp16 {m} | dynamic {m} | int8 {m} | "
              "train s (epochs) | Keras ms | TFLite fp32 ms | TFLite int8 ms |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines = []
    for task, metric in (("segmentation", "mean IoU"), ("instance_segmentation", "segm AP50")):
        rows = [r for r in result["rows"] if r.get("task") == task]
        if not rows:
            continue
        lines += ([""] if lines else []) + [h.format(m=metric) for h in header]
        for r in rows:
            if r.get("error"):
                lines.append(f"| {r['decoder']} | {r['upsampling']} | {r['backbone']}, {r['input']} | {r['error']} "
                             f"|||||||||| ")
                continue
            lines.append(
                f"| {r['decoder']} | {r['upsampling']} | {r['backbone']}, {r['input']} | {r['params']:,} | "
                f"{cell(r.get('macs') and r['macs'] / 1e9, '{:.3g}')} | {cell(r['value'], '{:.3f}')} | "
                + " | ".join(cell(r.get(f"{fmt}_value"), "{:.3f}") for fmt in QUANTIZED)
                + f" | {cell(r['train_seconds'], '{:.0f}')} ({r['epochs']}) | {cell(r.get('keras_ms'), '{:.2f}')} | "
                f"{cell(r.get('tflite_ms'), '{:.2f}')} | {cell(r.get('tflite_int8_ms'), '{:.2f}')} |")
    notes = [f"- {r['recipe']}: {k.replace('_note', '')}: {v}" for r in result["rows"] for k, v in r.items()
             if k.endswith("_note")]
    machine = result["machine"]
    lines += ["", "Each recipe's newest run: its metric on the val split (600 images for the semantic recipes, 800 for "
              "Mask R-CNN), the TFLite exports' on the same images (LiteRT, full-integer calibrated on training "
              "images); latency is the median batch-1 call, 1 runtime thread for LiteRT, measured in turns. "
              f"{machine['description']}; 1-minute load average {machine['load_average']} when it began (the "
              "machine may be shared)."]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv=None):
    """Measure every shipped segmentation recipe (or those named) and write the JSON and Markdown tables."""
    from convforge.bench.recipe_runs import recipe_table

    recipe_table(__doc__.splitlines()[0], ROOT / "recipes" / "segmentation", measure,
                 lambda path: {"recipe": path.name, "task": "segmentation", "decoder": path.stem, "upsampling": "",
                               "backbone": "", "input": ""}, OUT, "segmentation", render, argv)


if __name__ == "__main__":
    os.chdir(ROOT)  # recipes name their data and run folders relative to the project root
    main(sys.argv[1:])
