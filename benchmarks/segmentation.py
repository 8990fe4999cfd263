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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(__file__).parent / "results"


def measure(recipe_path, train=False):
    """One recipe's row (bench.recipe_runs.measured_row) with its decoder and upsampling mode."""
    from convforge.bench.recipe_runs import measured_row
    from convforge.recipes import load_recipe

    head = load_recipe(recipe_path).head or {}
    return measured_row(recipe_path, {"recipe": recipe_path.name, "decoder": head.get("name"),
                                      "upsampling": head.get("upsampling", "–")}, train, ROOT)


def render(result):
    """The Markdown tables of the rows (semantic, then instance segmentation), with the machine under them."""
    from convforge.bench.recipe_runs import QUANTIZED
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
