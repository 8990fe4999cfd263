"""Style transfer measured: the fast network of recipes/style/fast_vgg16_shapes.yaml (its newest run, trained first
with --train where there is none) exported to TFLite and ONNX and compared with Keras on scikit-image's sample
photos, its speed against Gatys' optimization and the AdaIN network (adain_vgg19_shapes.yaml) on the same
pictures, and a gallery (content, style, Gatys, fast, AdaIN).

Writes benchmarks/results/style.json, style.md and style_gallery.png (the README's). Run: make bench, or
    python benchmarks/style.py [--train] [--gatys-steps N]
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
RECIPE = ROOT / "recipes" / "style" / "fast_vgg16_shapes.yaml"
ADAIN = ROOT / "recipes" / "style" / "adain_vgg19_shapes.yaml"
CONTENTS = ("skimage:chelsea", "skimage:coffee", "skimage:astronaut")
SIDE = 128  # the pictures' longer side in the gallery and the timings


def measure(train=False, gatys_steps=100):
    """Export and compare the fast network, time both methods, draw the gallery; returns the JSON result."""
    import numpy as np

    import convforge
    from convforge.bench.compare import _machine
    from convforge.bench.recipe_runs import newest_run
    from convforge.modelfile import load_model
    from convforge.recipes import load_recipe
    from convforge.style.features import fit_size, read_style_image
    from convforge.style.gatys import gatys
    from convforge.runs import find_run
    from convforge.style.stylize import at_size, run_adain, run_network

    recipe = load_recipe(RECIPE)
    run, metrics = newest_run(recipe, RECIPE, train)
    if run is None:
        raise SystemExit(metrics)
    run = pathlib.Path(run)
    network = load_model(run / "model.keras")
    adain_run, adain_metrics = newest_run(load_recipe(ADAIN), ADAIN, train)
    if adain_run is None:
        raise SystemExit(adain_metrics)
    adain = find_run(adain_run)
    style = read_style_image(recipe.head["style_image"])
    pictures = [np.clip(np.round(fit_size(read_style_image(c), SIDE)), 0, 255).astype(np.uint8) for c in CONTENTS]
    # The exported network at 128 x 128, checked on the photos cut to that size.
    square = at_size(network, SIDE, SIDE)
    checks = np.stack([np.asarray(fit_size(p, SIDE, shortest=SIDE))[:SIDE, :SIDE] / 255.0 for p in pictures])
    checks = checks.astype("float32")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="convforge-style-"))
    exported = convforge.export(square, folder, formats=["tflite", "tflite_fp16", "onnx"], inputs_for_check=checks,
                                progress=None)
    artifacts = [{"format": a["format"], "max_abs_diff": a["check"]["max_abs_diff"], "status": a["check"]["status"],
                  "latency_ms": (a["check"].get("latency_ms") or {}).get("median"), "kib": a["bytes"] / 1024}
                 for a in exported["card"]["artifacts"]]
    rows, gallery = [], []
    for name, picture in zip(CONTENTS, pictures):
        clock = time.perf_counter()
        slow, info = gatys(picture, style, steps=gatys_steps, size=SIDE)
        gatys_seconds = time.perf_counter() - clock
        run_network(network, picture)  # the first call builds the network at this size
        clock = time.perf_counter()
        fast = run_network(network, picture)
        fast_seconds = time.perf_counter() - clock
        clock = time.perf_counter()
        arbitrary = run_adain(adain, picture, style)  # builds the network at this size, then runs it
        adain_seconds = time.perf_counter() - clock
        rows.append({"content": name, "size": list(picture.shape[:2]), "gatys_seconds": round(gatys_seconds, 2),
                     "gatys_steps": info["steps"], "gatys_style_loss": info["style_loss"],
                     "fast_seconds": round(fast_seconds, 4), "adain_seconds_with_build": round(adain_seconds, 2)})
        gallery.append((picture, slow, fast, arbitrary))
        print(json.dumps(rows[-1]), flush=True)
    draw_gallery(gallery, style, OUT / "style_gallery.png")
    return {"machine": _machine(), "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
            "style_image": recipe.head["style_image"], "train_seconds": metrics.get("seconds"),
            "val": {k[4:]: v for k, v in metrics.items() if k.startswith("val_") and k != "val_loss"},
            "params": int(network.count_params()), "artifacts": artifacts, "rows": rows,
            "adain": {"run": str(adain.run_dir), "train_seconds": adain_metrics.get("seconds"),
                      "val": {k[4:]: v for k, v in adain_metrics.items() if k.startswith("val_") and k != "val_loss"}},
            "vgg_weights": recipe.head.get("vgg_weights")}


def draw_gallery(rows, style, path):
    """One row per content picture: content, style, Gatys, fast, AdaIN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 5, figsize=(12.5, 2.6 * len(rows)), squeeze=False)
    for i, (content, slow, fast, arbitrary) in enumerate(rows):
        for ax, image, title in zip(axes[i], (content, style, slow, fast, arbitrary),
                                    ("content", "style", "Gatys", "fast", "AdaIN")):
            ax.imshow(image)
            ax.set_title(title if i == 0 else "", fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def render(result):
    """The Markdown table."""
    from convforge.bench.compare import machine_line

    machine = result["machine"]
    val = result["val"]
    lines = [f"Fast network ({result['params']:,} parameters, trained {result['train_seconds']:.0f} s): val "
             f"perceptual loss {val['perceptual_loss']:.3f} (content {val['content_loss']:.3f}, style "
             f"{val['style_loss']:.3f}, TV {val['tv_loss']:.3f}) against {val['unstyled_perceptual_loss']:.3f} for "
             f"the unstyled pictures (style {val['unstyled_style_loss']:.3f}); VGG weights: "
             f"{result['vgg_weights'] or 'seeded random (no ImageNet file here)'}.", "",
             "| artifact (128 x 128) | max abs diff vs Keras | status | size KiB | latency ms (batch 1) |",
             "|---|---:|---|---:|---:|"]
    for a in result["artifacts"]:
        latency = f"{a['latency_ms']:.2f}" if a["latency_ms"] else "-"
        lines.append(f"| {a['format']} | {a['max_abs_diff']:.2g} | {a['status']} | {a['kib']:.0f} | {latency} |")
    adain = result["adain"]["val"]
    lines += ["", f"AdaIN network (trained {result['adain']['train_seconds']:.0f} s): val perceptual loss "
              f"{adain['perceptual_loss']:.3f} (content {adain['content_loss']:.3f}, style {adain['style_loss']:.3f}) "
              f"against {adain['unstyled_perceptual_loss']:.3f} for the unstyled pictures (style "
              f"{adain['unstyled_style_loss']:.3f}).", "",
              "| content | size | Gatys (L-BFGS steps) s | fast network s | speed-up | AdaIN s (with building it) |",
              "|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['content']} | {r['size'][0]}x{r['size'][1]} | {r['gatys_seconds']:.1f} "
                     f"({r['gatys_steps']}) | {r['fast_seconds']:.3f} | {r['gatys_seconds'] / r['fast_seconds']:.0f}x "
                     f"| {r['adain_seconds_with_build']:.2f} |")
    lines += ["", machine_line(machine)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Measure and write results/style.json, style.md and style_gallery.png."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train the recipe when it has no run yet")
    parser.add_argument("--gatys-steps", type=int, default=100)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    result = measure(args.train, args.gatys_steps)
    (OUT / "style.json").write_text(json.dumps(result, indent=1) + "\n")
    (OUT / "style.md").write_text(render(result))
    print(f"wrote {OUT / 'style.md'}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main(sys.argv[1:])
