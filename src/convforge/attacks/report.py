"""`convforge attack`: one attack on a trained classifier's val images, measured and drawn.

White-box attacks read the run's Keras model; black-box ones (square, simba, hop_skip_jump) and the judge of a
transfer attack call the exported artifact given as `target` (TFLite, ONNX, SavedModel), or the Keras model
through its predictions alone. report.json holds clean and robust accuracy, the success rate, the mean norm
and queries and the settings; attack.png shows originals, the amplified perturbations and the adversarial
images with their predicted labels.
"""
import dataclasses
import os

import numpy as np

from convforge.errors import ConvforgeError

GRID_COLUMNS = 8


def val_pixels(recipe, target, n, seed=0):
    """(x, y): n val images of a recipe on the target's pixel scale, and their labels (a seeded choice)."""
    from convforge.train.datasets import val_data

    val, class_names = val_data(recipe)
    if val is None:
        raise ConvforgeError(f"{recipe.name}: data.val gives no validation split to attack")
    from convforge.attacks.target import dataset_pixels

    x, y = dataset_pixels(val, target)
    if n is not None and n < len(x):
        keep = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
        x, y = x[keep], y[keep]
    return x, y, class_names


def run_attack(source, attack, *, eps=None, n=200, out=None, target=None, surrogate=None, target_class=0,
               seed=0, progress=print, **settings):
    """Attack a trained classifier (recipe, run folder) on n val images; returns the report (also written as
    out/report.json with out/attack.png when out is given; a failed attack leaves no folder it created)."""
    import time

    from convforge import attacks
    from convforge.atomic import filling, write_json
    from convforge.attacks.target import WhiteBox, artifact_predictor
    from convforge.runs import find_run

    if attack not in attacks.ATTACKS:
        raise ConvforgeError(f"attack {attack!r} is not accepted; accepted: {', '.join(attacks.ATTACKS)}")
    run = find_run(source)
    if run.recipe is None and (run.model_path.parent / "recipe.yaml").exists():
        # A .keras file inside its run folder: the folder's recipe gives the val images.
        run = dataclasses.replace(find_run(run.model_path.parent), model_path=run.model_path)
    if run.recipe is None:
        raise ConvforgeError(f"{source!r} has no recipe to take val images from; accepted: a recipe, a run folder "
                             f"with its recipe.yaml, or a .keras file inside one")
    needs_eps = attack in ("fgsm", "pgd", "square", "simba") or (attack == "transfer" and
                                                                  settings.get("surrogate_attack", "pgd") in
                                                                  ("fgsm", "pgd"))
    if needs_eps and eps is None:
        raise ConvforgeError(f"the {attack} attack needs --eps (on the 0..1 pixel scale, e.g. 0.1)")
    model = WhiteBox(str(run.model_path))
    judge = artifact_predictor(target) if target else model.predict
    x, y, class_names = val_pixels(run.recipe, model, n, seed)
    clean = judge(x).argmax(1)
    say = progress or (lambda *_: None)
    say(f"attack: {attack} on {len(x)} val images of {run.recipe.name}"
        + (f", judged by {target}" if target else ""))
    _check_settings(attack, settings)
    clock = time.perf_counter()
    if attack in attacks.WHITE_BOX:
        if eps is not None and attack in ("fgsm", "pgd"):
            settings["eps"] = eps
        if attack == "pgd":
            settings.setdefault("seed", seed)
        result = attacks.WHITE_BOX[attack](model, x, y, **settings)
    elif attack in attacks.BLACK_BOX:
        if attack != "hop_skip_jump":
            settings["eps"] = eps
        result = attacks.BLACK_BOX[attack](judge, x, y, seed=seed, **settings)
    elif attack == "transfer":
        if surrogate is None:
            raise ConvforgeError("the transfer attack needs --surrogate: a recipe or run folder of the model the "
                                 "examples are crafted on")
        kind = settings.pop("surrogate_attack", "pgd")
        if eps is not None and kind in ("fgsm", "pgd"):
            settings["eps"] = eps
        result = attacks.transfer(WhiteBox(str(find_run(surrogate).model_path)), judge, x, y, kind, **settings)
    else:
        result = attacks.adversarial_patch(model, x, target_class, seed=seed, **settings)
        x, y, clean = x[result.held_out], y[result.held_out], clean[result.held_out]
    seconds = time.perf_counter() - clock
    adversarial = judge(result.x_adv.astype(np.float32)).argmax(1)
    report = {
        "source": str(run.run_dir or run.model_path), "recipe": run.recipe.name, "attack": attack,
        "judged_by": str(target) if target else "keras", "examples": int(len(x)),
        "clean_accuracy": float(np.mean(clean == y)) if len(y) else 0.0,
        "robust_accuracy": float(np.mean(adversarial == y)) if len(y) else 0.0,
        "success_rate": result.success_rate,
        "mean_norm": float(np.mean(result.norm)) if len(result.norm) else 0.0,
        "mean_queries": float(np.mean(result.queries)) if len(result.queries) else 0.0,
        "seconds": round(seconds, 2), "settings": _plain(result.settings),
    }
    if attack == "patch":
        report["target_class"] = int(target_class)
        report["train_success_rate"] = result.train_success_rate
    say("  ".join(f"{k} {report[k]:.4f}" for k in ("clean_accuracy", "robust_accuracy", "success_rate",
                                                   "mean_norm", "mean_queries")))
    if out is None:
        return report
    with filling(out) as folder:
        draw_attack(x, result.x_adv, clean, adversarial, y, class_names, os.path.join(folder, "attack.png"),
                    patch=getattr(result, "patch", None))
        write_json(os.path.join(folder, "report.json"), report)
    return {**report, "out": folder}


def _check_settings(attack, settings):
    """Raise ConvforgeError naming a setting the attack does not take."""
    import inspect

    from convforge import attacks

    function = {**attacks.WHITE_BOX, **attacks.BLACK_BOX, "transfer": attacks.transfer,
                "patch": attacks.adversarial_patch}[attack]
    taken = set(inspect.signature(function).parameters) | ({"surrogate_attack", "steps", "norm", "max_queries"}
                                                            if attack == "transfer" else set())
    for key in settings:
        if key not in taken:
            raise ConvforgeError(f"--{key.replace('_', '-')} does not apply to the {attack} attack; it takes "
                                 f"{', '.join(sorted(k for k in taken if k not in ('model', 'predict', 'x', 'y')))}")


def _plain(value):
    """Settings as JSON-ready values (numpy scalars and tuples made plain)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def draw_attack(x, x_adv, clean, adversarial, y, class_names, out_path, patch=None):
    """A PNG grid: originals (true and predicted label), perturbations amplified to the full range, adversarial
    images (predicted label, red where it changed); with a patch, the patch itself in the corner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convforge.visualize import _save_figure

    count = min(GRID_COLUMNS, len(x))
    columns = max(count, 1) + (patch is not None)
    fig, axes = plt.subplots(3, columns, figsize=(1.6 * columns, 5.2), squeeze=False)
    name = (lambda i: class_names[i] if 0 <= i < len(class_names) else str(i))
    lo, hi = float(min(x.min(), x_adv.min())) if len(x) else 0.0, float(max(x.max(), x_adv.max())) if len(x) else 1.0

    def show(ax, image):
        image = (np.asarray(image, np.float32) - lo) / max(hi - lo, 1e-12)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                  vmin=0, vmax=1)

    for i in range(count):
        delta = x_adv[i].astype(np.float32) - x[i]
        scale = np.abs(delta).max() or 1.0
        show(axes[0, i], x[i])
        axes[0, i].set_title(f"{name(int(y[i]))} -> {name(int(clean[i]))}", fontsize=8)
        amplified = 0.5 + 0.5 * delta / scale
        axes[1, i].imshow(amplified[..., 0] if amplified.shape[-1] == 1 else amplified, cmap="RdBu_r"
                          if amplified.shape[-1] == 1 else None, vmin=0, vmax=1)
        axes[1, i].set_title(f"x{1 / scale:.0f}" if scale < 1 else "delta", fontsize=8)
        show(axes[2, i], x_adv[i])
        changed = adversarial[i] != clean[i]
        axes[2, i].set_title(name(int(adversarial[i])), fontsize=8, color="red" if changed else "black")
    if patch is not None:
        show(axes[0, -1], patch)
        axes[0, -1].set_title("patch", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].text(-0.1, 0.5, "original", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, "perturbation", transform=axes[1, 0].transAxes, rotation=90, va="center",
                    ha="right")
    axes[2, 0].text(-0.1, 0.5, "adversarial", transform=axes[2, 0].transAxes, rotation=90, va="center",
                    ha="right")
    _save_figure(fig, out_path)
