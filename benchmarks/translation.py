"""Unpaired translation measured: recipes/translation/cyclegan_shapes.yaml (its newest run, trained first with
--train where there is none) scored on the held-out textured scenes against the same scenes drawn flat: PSNR and
SSIM beside the identity baseline, and the accuracy of a shapes classifier trained on the flat domain (the judge:
resnet18_shapes.yaml at quarter widths on 6,000 pictures in domain B's look) on the translations; both generators
exported to every format and verified; a gallery (input, A -> B, ground truth, A -> B -> A).

Writes benchmarks/results/translation.json, translation.md and translation_gallery.png (the README's). Run: make
bench, or
    python benchmarks/translation.py [--train]
With --ceiling [--steps N] it measures instead what the recipe's generator reaches with paired supervision (the
bound unpaired training is not expected to pass): results/translation_ceiling_N.json.
"""
import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path(__file__).parent / "results"
RECIPE = ROOT / "recipes" / "translation" / "cyclegan_shapes.yaml"
JUDGE = ROOT / "recipes" / "classification" / "resnet18_shapes.yaml"
GALLERY_PICTURES = 6


def judge_recipe(translation):
    """The judge: the shapes classifier recipe trained on domain B's look (B's seed, drawn 6,000 times so the
    classifier is sure of itself), at the quarter widths and rate that learn shapes fastest here (the resnet18
    localization recipe's)."""
    from convforge.recipes import load_recipe

    b = translation.data.domain_b
    sets = [f"name={translation.name}_judge", f"data.train.path={b.path}_judge", "data.train.n=6000",
            f"data.train.size={b.size}", f"data.train.seed={b.seed}", f"data.train.style={b.style}",
            f"model.input_shape=[{b.size},{b.size},3]", "model.options.widths=[16,32,64,128]", "train.epochs=8",
            "train.optimizer.learning_rate=0.003", "train.optimizer.weight_decay=0.0005", "export.formats=[]"]
    return load_recipe(JUDGE, overrides=sets)


def measure(train=False, run=None):
    """Evaluate the newest translation run (or `run`) with the judge, export both directions, draw the gallery."""
    import numpy as np

    import convforge
    from convforge.bench.compare import _machine
    from convforge.bench.recipe_runs import newest_run
    from convforge.modelfile import load_model
    from convforge.recipes import load_recipe
    from convforge.train.datasets import val_data
    from convforge.visualize import draw_picture_grid

    recipe = load_recipe(RECIPE)
    judge = judge_recipe(recipe)
    judge_run, judge_metrics = newest_run(judge, JUDGE, train)
    if judge_run is None:
        raise SystemExit(judge_metrics)
    if run is None:
        run, metrics = newest_run(recipe, RECIPE, train)
        if run is None:
            raise SystemExit(metrics)
    else:
        metrics = json.loads((pathlib.Path(run) / "metrics.json").read_text())
        recipe = load_recipe(pathlib.Path(run) / "recipe.yaml")
    run = pathlib.Path(run).resolve()
    scores = convforge.evaluate(run, overrides=[f"head.judge={judge_run}"],
                                out=tempfile.mkdtemp(prefix="convforge-translation-"))
    artifacts, failures = {}, {}
    for direction in ("a2b", "b2a"):
        folder = pathlib.Path(tempfile.mkdtemp(prefix=f"convforge-translation-{direction}-"))
        try:
            exported = convforge.export_run(run, out=folder / "export", direction=direction, progress=None,
                                            fail_on_drop=False)
        except convforge.ConvforgeError as error:  # a format over its tolerance: reported, not hidden
            failures[direction] = str(error)
            print(json.dumps({direction: failures[direction]}), flush=True)
            continue
        artifacts[direction] = [
            {"format": a["format"], "max_abs_diff": a["check"]["max_abs_diff"], "status": a["check"]["status"],
             "ssim": (a["check"].get("metric") or {}).get("value"), "kib": a["bytes"] / 1024,
             "latency_ms": (a["check"].get("latency_ms") or {}).get("median")}
            for a in exported["card"]["artifacts"]]
        print(json.dumps({direction: artifacts[direction]}), flush=True)
    # The gallery: the first val scenes, translated, against their flat drawing.
    a2b, b2a = load_model(run / "model.keras"), load_model(run / "model_b2a.keras")
    val, _ = val_data(recipe)
    images, targets = next(iter(val.unbatch().batch(GALLERY_PICTURES)))
    translated = np.asarray(a2b(images, training=False))
    rows = [np.asarray(images), translated, np.asarray(targets["paired"]),
            np.asarray(b2a(translated, training=False))]
    OUT.mkdir(parents=True, exist_ok=True)
    draw_picture_grid(rows, OUT / "translation_gallery.png",
                      ["textured (A)", "A -> B", "flat truth", "A -> B -> A"])
    return {"machine": _machine(), "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
            "train_seconds": metrics.get("seconds"), "epochs": metrics.get("epochs_completed"),
            "judge_run": str(judge_run), "judge_val_accuracy": judge_metrics.get("val_accuracy"),
            "val": {k[4:]: v for k, v in scores.items() if k.startswith("val_")}, "artifacts": artifacts,
            "export_failures": failures,
            "params": {name: int(load_model(run / f).count_params()) for name, f in
                       (("generator", "model.keras"),)}}


def supervised_ceiling(judge_run, steps=None):
    """What the recipe's A -> B generator reaches with paired supervision: trained with L1 against the same train
    scenes drawn in B's style (the recipe's optimizer, batch and step count unless `steps`), then scored as the
    recipe's runs are (PSNR, SSIM, the judge). Unpaired training is not expected to beat it."""
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from convforge.bench.compare import _machine
    from convforge.recipes import load_recipe
    from convforge.tasks import get_task
    from convforge.train.datasets import val_data
    from convforge.train.schedules import make_schedule

    recipe = load_recipe(RECIPE)
    steps = steps or recipe.train.epochs * recipe.train.steps_per_epoch
    # The train split of A with its scenes drawn in B's style, read as evaluation reads val and its paired truth.
    as_val = load_recipe(RECIPE, overrides=["data.val.split=train", "data.paired_val.split=train",
                                            f"data.paired_val.path={recipe.data.train.path}_paired_train"])
    batches = [(np.asarray(images), np.asarray(targets["paired"])) for images, targets in val_data(as_val)[0]]
    pictures = tuple(np.concatenate(part) for part in zip(*batches))
    task = get_task("translation", {**recipe.head, "judge": str(judge_run)})
    keras.utils.set_random_seed(recipe.train.seed)
    generator = task.build_model(None, recipe.model.input_shape, None).generator_ab
    o = recipe.train.optimizer
    rate = make_schedule(recipe.train.schedule, o.learning_rate, steps, 1)  # the recipe's schedule over `steps`
    generator.compile(keras.optimizers.Adam(rate, beta_1=o.beta_1), loss="mae")

    def flip(x, y):
        return tf.cond(tf.random.uniform(()) < 0.5, lambda: (x, y), lambda: (x[:, ::-1], y[:, ::-1]))

    pairs = (tf.data.Dataset.from_tensor_slices(pictures).shuffle(len(pictures[0]), seed=recipe.train.seed)
             .repeat().map(flip).batch(recipe.data.batch_size))
    start = time.perf_counter()
    history = generator.fit(pairs, steps_per_epoch=steps, epochs=1, verbose=0).history
    seconds = time.perf_counter() - start
    val, class_names = val_data(recipe)
    scores = task.evaluate(generator, val, class_names)
    return {"machine": _machine(), "steps": steps, "train_seconds": seconds, "final_l1": history["loss"][-1],
            "judge_run": str(judge_run), "val": scores}


def render(result):
    """The Markdown table."""
    from convforge.bench.compare import machine_line

    v = result["val"]
    lines = [f"CycleGAN on shapes, textured (A) <-> flat (B), 64 px, unpaired (disjoint seeds); trained "
             f"{result['train_seconds']:.0f} s ({result['epochs']} epochs), generator "
             f"{result['params']['generator']:,} parameters. Held-out scenes of A against the same scenes drawn flat:",
             "", "| | translated (A -> B) | identity (the input) | gain |", "|---|---:|---:|---:|",
             f"| PSNR dB | {v['psnr']:.2f} | {v['identity_psnr']:.2f} | {v['psnr_gain']:+.2f} |",
             f"| SSIM | {v['ssim']:.3f} | {v['identity_ssim']:.3f} | {v['ssim'] - v['identity_ssim']:+.3f} |"]
    if "judge_accuracy" in v:
        lines += [f"| judge classifier accuracy | {v['judge_accuracy']:.1%} | {v['judge_accuracy_identity']:.1%} | "
                  f"{v['judge_accuracy'] - v['judge_accuracy_identity']:+.1%} |", "",
                  f"The judge is resnet18_shapes.yaml at quarter widths trained on 6,000 flat pictures (val accuracy "
                  f"{result['judge_val_accuracy']:.1%}; on the flat ground truth of these scenes "
                  f"{v['judge_accuracy_truth']:.1%})."]
    lines += ["", "| direction | artifact | max abs diff vs Keras | status | SSIM vs truth | size KiB | latency ms |",
              "|---|---|---:|---|---:|---:|---:|"]
    for direction, rows in result["artifacts"].items():
        for a in rows:
            ssim = f"{a['ssim']:.3f}" if a["ssim"] is not None else "-"
            latency = f"{a['latency_ms']:.2f}" if a["latency_ms"] else "-"
            lines.append(f"| {direction} | {a['format']} | {a['max_abs_diff']:.2g} | {a['status']} | {ssim} | "
                         f"{a['kib']:.0f} | {latency} |")
    for direction, message in result.get("export_failures", {}).items():
        shown = message.replace("|", "\\|")  # a pipe inside the message would end the table cell
        lines.append(f"| {direction} | export stopped | {shown} | failed | - | - | - |")
    lines += ["", machine_line(result["machine"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Measure and write results/translation.json, translation.md and translation_gallery.png."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train the recipe (and the judge) when it has no run")
    parser.add_argument("--run", help="a run folder of the recipe to measure (default: its newest)")
    parser.add_argument("--ceiling", action="store_true", help="instead: train the recipe's generator with paired "
                        "supervision and score it (results/translation_ceiling_STEPS.json)")
    parser.add_argument("--steps", type=int, help="--ceiling's training steps (default: the recipe's)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.ceiling:
        from convforge.bench.recipe_runs import newest_run
        from convforge.recipes import load_recipe

        judge_run, judge_metrics = newest_run(judge_recipe(load_recipe(RECIPE)), JUDGE, args.train)
        if judge_run is None:
            raise SystemExit(judge_metrics)
        result = supervised_ceiling(judge_run, args.steps)
        out = OUT / f"translation_ceiling_{result['steps']}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["val"]), f"\nwrote {out}")
        return
    result = measure(args.train, args.run)
    (OUT / "translation.json").write_text(json.dumps(result, indent=1) + "\n")
    (OUT / "translation.md").write_text(render(result))
    print(f"wrote {OUT / 'translation.md'}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main(sys.argv[1:])
