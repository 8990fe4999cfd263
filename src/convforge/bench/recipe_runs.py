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


def recipe_table(description, folder, measure, failed_row, out_dir, stem, render, argv=None):
    """The command line of a per-task table: measure each recipe named (default: every recipe in `folder`), a
    failure becoming its row's error, then write out_dir/<stem>.json and <stem>.md (render(result))."""
    import argparse

    from convforge.bench.compare import _machine

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("recipes", nargs="*", help=f"recipes (default: {folder}/*.yaml)")
    parser.add_argument("--train", action="store_true", help="train recipes that have no run yet")
    args = parser.parse_args(argv)
    paths = [pathlib.Path(p).resolve() for p in args.recipes] or sorted(pathlib.Path(folder).glob("*.yaml"))
    machine = _machine()
    rows = []
    for i, path in enumerate(paths, 1):
        try:
            row = measure(path, args.train)
        except Exception as error:  # one recipe's failure is its row's, not the table's
            row = {**failed_row(path), "error": one_line(error)}
        rows.append(row)
        print(f"[{i}/{len(paths)}] {json.dumps(row)}", flush=True)
    result = {"machine": machine, "rows": rows}
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / f"{stem}.md").write_text(render(result))
    print(f"wrote {out_dir / f'{stem}.md'}")
    return result
