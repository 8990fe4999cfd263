"""The keypoint heads and the voxel model side by side: for each shipped recipe in recipes/keypoints/ and
recipes/shape3d/, its newest trained run's headline metric (val NME for faces, lower is better; PCK@0.2 for
bodies; voxel IoU for 3D shape), the same metric of its TFLite fp16, dynamic-range and full-int8 exports judged
on the whole val split, training time, the model's size and MACs, and batch-1 latency in Keras and in LiteRT
(fp32 and int8).

Runs are trained first where a recipe has none (`--train`; up to 15 minutes each on 2 cores). Writes
benchmarks/results/keypoints.json and keypoints.md (the README's table). Run: make bench, or
    python benchmarks/keypoints.py [--train] [RECIPE ...]
"""
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(__file__).parent / "results"


def measure(recipe_path, train=False):
    """One recipe's row (bench.recipe_runs.measured_row) with its head, loss and the data it learns."""
    from convforge.bench.recipe_runs import measured_row
    from convforge.recipes import load_recipe

    recipe = load_recipe(recipe_path)
    head = recipe.head or {}
    name = head.get("name", "heatmap")
    if name == "voxels":  # the loss is fixed; what varies is the decoder
        loss = f"{head.get('voxel_size', 32)}^3, {head.get('upsampling', 'subvoxel')}"
    else:
        loss = head.get("loss", "cross_entropy" if name == "heatmap" else "wing").replace("_", "-")
        loss += ", top-down crops" if head.get("top_down") else ""
    return measured_row(recipe_path, {"recipe": recipe_path.name, "head": name, "loss": loss,
                                      "data": recipe.data.train.source}, train, ROOT)


def render(result):
    """The Markdown table of the rows, with the machine under it."""
    from convforge.bench.recipe_runs import QUANTIZED
    from convforge.numbers import cell

    lines = ["| recipe | head (loss) | backbone, input | params | GMACs | metric | value | fp16 | dynamic | int8 | "
             "train s (epochs) | Keras ms | TFLite fp32 ms | TFLite int8 ms |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if r.get("error"):
            lines.append(f"| {r['recipe']} | {r.get('head', '')} | {r.get('backbone', '')} | {r['error']} "
                         f"|||||||||||")
            continue
        lines.append(
            f"| {r['recipe']} | {r['head']} ({r['loss']}) | {r['backbone']}, {r['input']} | {r['params']:,} | "
            f"{cell(r.get('macs') and r['macs'] / 1e9, '{:.3g}')} | {r['metric']} | {cell(r['value'], '{:.4f}')} | "
            + " | ".join(cell(r.get(f"{fmt}_value"), "{:.4f}") for fmt in QUANTIZED)
            + f" | {cell(r['train_seconds'], '{:.0f}')} ({r['epochs']}) | {cell(r.get('keras_ms'), '{:.2f}')} | "
            f"{cell(r.get('tflite_ms'), '{:.2f}')} | {cell(r.get('tflite_int8_ms'), '{:.2f}')} |")
    notes = [f"- {r['recipe']}: {k.replace('_note', '')}: {v}" for r in result["rows"] for k, v in r.items()
             if k.endswith("_note")]
    machine = result["machine"]
    lines += ["", "Each recipe's newest run: its metric on the val split, the TFLite exports' on the same images "
              "(LiteRT, full-integer calibrated on training images); latency is the median batch-1 call, 1 runtime "
              f"thread for LiteRT, measured in turns. {machine['description']}; 1-minute load average "
              f"{machine['load_average']} when it began (the machine may be shared)."]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv=None):
    """Measure every shipped keypoint and shape3d recipe (or those named) and write the JSON and Markdown tables."""
    from convforge.bench.recipe_runs import recipe_table

    recipe_table(__doc__.splitlines()[0], [ROOT / "recipes" / "keypoints", ROOT / "recipes" / "shape3d"], measure,
                 lambda path: {"recipe": path.name, "head": path.stem, "backbone": ""}, OUT, "keypoints", render,
                 argv)


if __name__ == "__main__":
    os.chdir(ROOT)  # recipes name their data and run folders relative to the project root
    main(sys.argv[1:])
