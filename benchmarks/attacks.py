"""Attacks against the digits LeNet-5, trained normally and adversarially: clean vs robust accuracy per attack.

For each of recipes/classification/lenet5_digits.yaml and lenet5_digits_adversarial.yaml, the newest run (trained
first with --train where there is none) is exported to TFLite fp32, and every attack runs on the whole val split:
white-box ones on the Keras model, black-box ones against the TFLite file through the LiteRT interpreter (never a
gradient), the transfer attack from the other model, the adversarial patch at three sizes. Writes
benchmarks/results/attacks.json and attacks.md (the README's table). Run: make bench, or
    python benchmarks/attacks.py [--train]
"""
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(__file__).parent / "results"
RECIPES = {"standard": ROOT / "recipes/classification/lenet5_digits.yaml",
           "adversarial": ROOT / "recipes/classification/lenet5_digits_adversarial.yaml"}
EPS = 0.1  # a tenth of the 0..1 pixel range: the setting

# (row name, kind, function name, settings): kind "white" runs on Keras, "black" on the TFLite file,
# "transfer" crafts on the other model and judges on the TFLite file, "patch" trains a patch toward class 8.
ATTACKS = [
    ("FGSM linf 0.1", "white", "fgsm", {"eps": EPS}),
    ("PGD linf 0.1, 20 steps", "white", "pgd", {"eps": EPS, "steps": 20}),
    ("PGD linf 0.1, 20 steps x 5 restarts", "white", "pgd", {"eps": EPS, "steps": 20, "restarts": 5}),
    ("PGD l2 1.5, 20 steps", "white", "pgd", {"eps": 1.5, "norm": "l2", "steps": 20}),
    ("Carlini-Wagner L2", "white", "carlini_wagner", {"steps": 100, "binary_steps": 6}),
    ("DeepFool L2", "white", "deepfool", {}),
    ("Square linf 0.1, 1000 queries (TFLite)", "black", "square", {"eps": EPS, "max_queries": 1000}),
    ("SimBA pixel 0.2, 1000 queries (TFLite)", "black", "simba", {"eps": 0.2, "max_queries": 1000}),
    ("HopSkipJump L2, 1000 queries (TFLite)", "black", "hop_skip_jump", {"max_queries": 1000}),
    ("transfer PGD linf 0.1 from the other model (TFLite)", "transfer", "pgd", {"eps": EPS, "steps": 20}),
]
PATCH_SIZES = (0.3, 0.5, 0.7)
PATCH_TARGET = 8


def run_of(recipe_path, train):
    """The newest run folder of a recipe (trained first when asked and missing)."""
    from convforge.bench.recipe_runs import newest_run
    from convforge.recipes import load_recipe

    run, metrics = newest_run(load_recipe(recipe_path), recipe_path, train)
    if run is None:
        raise SystemExit(metrics)
    return pathlib.Path(run), metrics


def measure(train=False):
    """Every attack on both models; returns the JSON result."""
    import numpy as np

    from convforge import attacks
    from convforge.attacks.report import val_pixels
    from convforge.attacks.target import WhiteBox, artifact_predictor
    from convforge.bench.compare import _machine
    from convforge.runs import export_run, find_run

    models, rows = {}, []
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="convforge-attacks-"))
    for name, recipe in RECIPES.items():
        run, metrics = run_of(recipe, train)
        export_run(run, out=scratch / name, formats=["tflite"], progress=None)
        keras_model = WhiteBox(str(find_run(run).model_path))
        x, y, _ = val_pixels(find_run(run).recipe, keras_model, None)
        models[name] = dict(run=run, metrics=metrics, model=keras_model,
                            tflite=artifact_predictor(scratch / name / "model.tflite"), x=x, y=y)
    for label, kind, function, settings in ATTACKS:
        row = {"attack": label}
        for name, m in models.items():
            x, y = m["x"], m["y"]
            judge = m["tflite"] if kind in ("black", "transfer") else m["model"].predict
            clock = time.perf_counter()
            if kind == "white":
                result = getattr(attacks, function)(m["model"], x, y, **settings)
            elif kind == "black":
                result = getattr(attacks, function)(m["tflite"], x, y, **settings)
            else:
                other = models["adversarial" if name == "standard" else "standard"]["model"]
                result = attacks.transfer(other, m["tflite"], x, y, function, **settings)
            seconds = time.perf_counter() - clock
            robust = float(np.mean(judge(result.x_adv).argmax(1) == y))
            row[name] = {"clean_accuracy": float(np.mean(judge(x).argmax(1) == y)), "robust_accuracy": robust,
                         "success_rate": result.success_rate,
                         "median_norm": float(np.median(result.norm[result.success])) if result.success.any()
                         else None,
                         "mean_queries": float(np.mean(result.queries)), "seconds": round(seconds, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    patches = []
    for size in PATCH_SIZES:
        row = {"size": size}
        for name, m in models.items():
            result = attacks.adversarial_patch(m["model"], m["x"], PATCH_TARGET, size=size, steps=500, seed=0)
            row[name] = {"success_rate": result.success_rate, "held_out": int(len(result.held_out)),
                         "side": result.settings["side"], "area_share": result.settings["side"] ** 2 / 32 ** 2}
        patches.append(row)
        print(json.dumps(row), flush=True)
    return {"machine": _machine(), "eps": EPS, "val_images": int(len(models["standard"]["y"])),
            "runs": {name: {"run": str(m["run"].relative_to(ROOT)) if m["run"].is_relative_to(ROOT) else str(m["run"]),
                            "train_seconds": m["metrics"].get("seconds"),
                            "val_accuracy": m["metrics"].get("val_accuracy"),
                            "val_robust_accuracy": m["metrics"].get("val_robust_accuracy")}
                     for name, m in models.items()},
            "rows": rows, "patch": {"target": PATCH_TARGET, "steps": 500, "rows": patches}}


def _cell(entry):
    """One model's cell: robust accuracy, and the norm and queries where they say something."""
    norm = f", median norm {entry['median_norm']:.3g}" if entry["median_norm"] is not None else ""
    queries = f", {entry['mean_queries']:.0f} queries" if entry["mean_queries"] > 1 else ""
    return f"{entry['robust_accuracy']:.1%}{norm}{queries}"


def render(result):
    """The Markdown tables."""
    from convforge.bench.compare import machine_line

    machine = result["machine"]
    runs = result["runs"]
    lines = [f"LeNet-5 on the digits' {result['val_images']} val images (pixels on 0..1). Clean accuracy: standard "
             f"{runs['standard']['val_accuracy']:.1%}, adversarially trained {runs['adversarial']['val_accuracy']:.1%} "
             f"(trained in {runs['standard']['train_seconds']:.0f} s and {runs['adversarial']['train_seconds']:.0f} s).",
             "", "| attack | standard: robust accuracy | adversarially trained: robust accuracy |", "|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['attack']} | {_cell(row['standard'])} | {_cell(row['adversarial'])} |")
    lines += ["", "Robust accuracy: the share of val images still classified correctly after the attack (for "
              "black-box and transfer rows, by the TFLite model). Norms are of the successful perturbations "
              "(linf for FGSM/PGD linf/Square, L2 otherwise); queries are model calls per image (gradient calls "
              "for white-box attacks).", "",
              f"Adversarial patch toward class {result['patch']['target']} ({result['patch']['steps']} Adam steps, "
              f"random placement, scale 0.8-1.2, rotation +-20 degrees; held-out images not already of the target):",
              "", "| patch side (share of the image side) | area | standard: flipped to the target | "
              "adversarially trained |", "|---|---:|---:|---:|"]
    for row in result["patch"]["rows"]:
        lines.append(f"| {row['size']} ({row['standard']['side']} px) | {row['standard']['area_share']:.0%} | "
                     f"{row['standard']['success_rate']:.1%} | {row['adversarial']['success_rate']:.1%} |")
    lines += ["", machine_line(machine)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Measure and write results/attacks.json and attacks.md."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train the recipes that have no run yet")
    args = parser.parse_args(argv)
    result = measure(args.train)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "attacks.json").write_text(json.dumps(result, indent=1) + "\n")
    (OUT / "attacks.md").write_text(render(result))
    print(f"wrote {OUT / 'attacks.md'}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main(sys.argv[1:])
