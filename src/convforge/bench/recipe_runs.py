"""What the per-task benchmark tables (benchmarks/detection.py, benchmarks/segmentation.py) read from a shipped
recipe: its newest trained run (trained on request), and the size of the model that run saved."""
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
