"""Small instances of the registered families, shared by the tests that build many architectures.

Each entry keeps every kind of block the family's variants are made of (basic/bottleneck blocks, groups, SE,
BN or not, the AlexNet conv table, the Inception module tables ...) with fewer repeats and narrower layers,
so a test exercises the same layers and converters in a fraction of the time.
"""
import json

from convforge.recipes import load_recipe
from convforge.registry import get_spec
from convforge.tasks import task_class

SMALL = {
    "resnet": dict(depths=(1, 1, 1, 1), widths=(16, 32, 64, 128)),
    "densenet": dict(blocks=(1, 1, 1, 1), growth_rate=8, init_features=16),
    "vgg": dict(blocks=(1, 1, 1, 1, 1), widths=(8, 16, 32, 64, 64), fc_units=64),
    "alexnet": dict(fc_units=64),
    "mobilenet": dict(alpha=0.35),
    "googlenet": dict(width=0.25),
    "inception": dict(width=0.25),
    "unet": dict(widths=(8, 16, 32, 64, 128)),
}


def small_options(name):
    """The registered options of `name` with its family's shrinking options on top."""
    spec = get_spec(name)
    return {**spec.options, **SMALL.get(spec.family, {})}


def tiny(recipe_path, shapes_dir=None, epochs=1, steps=2, small_model=False):
    """--set overrides that shrink a shipped recipe to a few steps on tiny images (and a small instance of its
    architecture, with the same kinds of block, when small_model)."""
    recipe = load_recipe(recipe_path)
    sets = [f"train.epochs={epochs}", f"train.steps_per_epoch={steps}", "data.batch_size=16"]
    if small_model:
        spec = get_spec(recipe.model.architecture)
        shrink = SMALL.get(spec.family, {})
        # A task without the classification top (detection on AlexNet) refuses the top's options (fc_units).
        uses_top = task_class(recipe.task).uses_classification_top
        sets += [f"model.options.{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in shrink.items()
                 if k not in recipe.model.options and (uses_top or k in spec.backbone_option_names)]
    if recipe.task == "shape3d":
        sets.append("head.channels=16")  # the 3D decoder's width, as small_model narrows a backbone
    if recipe.train.schedule.name == "cosine":
        sets.append("train.schedule.warmup_epochs=0")
    if recipe.data.train.source in ("shapes", "faces", "figures", "solids"):
        # A procedural set drawn small, each kind in its own folder (one folder holds one set's arguments).
        size = max(32, get_spec(recipe.model.architecture).min_input_size)
        folder = shapes_dir if recipe.data.train.source == "shapes" else f"{shapes_dir}_{recipe.data.train.source}"
        sets += [f"data.train.path={folder}", "data.train.n=64", "data.train.size=32",
                 "data.train.val_fraction=0.25", f"model.input_shape=[{size},{size},3]"]
    return sets
