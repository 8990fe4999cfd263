"""Recipes: YAML loading, `base:` inheritance, --set overrides, and one-line errors that name the field."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from convforge.errors import RecipeError
from convforge.recipes import (CosineSchedule, OneCycleSchedule, Recipe, StepSchedule, load_recipe,
                               recipe_json_schema, validate_recipe)

FULL = """\
name: resnet18_shapes
task: classification
model:
  architecture: resnet18
  input_shape: [64, 64, 3]
  num_classes: 4
  options: {se_ratio: 16}
  weights: null
data:
  train: {source: shapes, path: data/shapes64, n: 200, size: 64, seed: 3, objects: [1, 2]}
  val:   {source: shapes, path: data/shapes64, split: val}
  batch_size: 16
  cache: true
  shuffle_buffer: 100
  normalize: {mean: [120.0, 115.0, 100.0], std: [60, 60, 60]}
  augment: [{name: flip}, {name: translate, factor: 0.1}, mixup]
  strict: false
train:
  epochs: 10
  steps_per_epoch: null
  optimizer: {name: adamw, learning_rate: 0.001, weight_decay: 0.0001}
  schedule: {name: cosine, warmup_epochs: 1}
  label_smoothing: 0.1
  early_stopping: {monitor: val_loss, patience: 5, mode: auto}
  precision: auto
  distribution: auto
  seed: 0
  deterministic: false
  aux_loss_weight: 0.3
export:
  formats: [saved_model, tflite, tflite_fp16, tflite_dynamic, tflite_int8, onnx]
  representative_size: 50
  int8_max_accuracy_drop: 1.0
  onnx_opset: 17
"""

MINIMAL = {"name": "tiny", "model": {"architecture": "resnet18", "input_shape": [64, 64, 3]},
           "data": {"train": {"source": "digits"}}}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run in a scratch folder: shapes caches and export folders are relative to the working directory."""
    monkeypatch.chdir(tmp_path)


def write(path, content):
    """Write a recipe (YAML text or a mapping) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
    return path


def with_changes(recipe, **changes):
    """A deep copy of a recipe mapping with dotted keys (given with '__' for '.') set."""
    out = copy.deepcopy(recipe)
    for dotted, value in changes.items():
        keys = dotted.split("__")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


def error_of(path, overrides=()):
    """The RecipeError message of loading a recipe; it must be a single line."""
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_full_recipe_loads_with_every_section(tmp_path):
    recipe = load_recipe(write(tmp_path / "recipes" / "full.yaml", FULL))
    assert isinstance(recipe, Recipe) and recipe.source_path == tmp_path / "recipes" / "full.yaml"
    assert recipe.model.architecture == "resnet18" and recipe.model.options == {"se_ratio": 16}
    assert recipe.data.train.n == 200 and recipe.data.normalize.std == [60.0, 60.0, 60.0]
    # val mirrors train's fields, so the generated set and its split agree
    assert (recipe.data.val.split, recipe.data.val.n, recipe.data.val.seed) == ("val", 200, 3)
    assert [a.name for a in recipe.data.augment] == ["flip", "translate", "mixup"]
    assert recipe.data.augment[1].kwargs == {"factor": 0.1}
    assert recipe.train.optimizer.kwargs == {"learning_rate": 0.001, "weight_decay": 0.0001}
    assert isinstance(recipe.train.schedule, CosineSchedule) and recipe.train.schedule.warmup_epochs == 1
    assert recipe.train.early_stopping.patience == 5
    assert recipe.export.out_dir == "saved_models/resnet18_shapes"
    assert len(recipe.export.formats) == 6


def test_resolved_recipe_round_trips_through_yaml(tmp_path):
    recipe = load_recipe(write(tmp_path / "full.yaml", FULL))
    again = load_recipe(write(tmp_path / "resolved.yaml", recipe.to_yaml()))
    assert again.to_dict() == recipe.to_dict()
    assert "base" not in recipe.to_dict()


def test_defaults_fill_a_minimal_recipe(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.yaml", with_changes(MINIMAL, model__input_shape=None)))
    assert recipe.task == "classification"
    assert recipe.model.input_shape == [224, 224, 3]  # the architecture's default, spelled out
    assert recipe.train.epochs == 10 and recipe.train.optimizer.name == "adam"
    assert recipe.train.schedule.name == "constant" and recipe.train.precision == "auto"
    assert recipe.data.val.source == "digits" and recipe.data.val.split == "val"
    assert recipe.export.formats == ["saved_model", "tflite"] and recipe.export.onnx_opset == 17


def test_base_chain_two_levels_with_overrides(tmp_path):
    write(tmp_path / "base" / "common.yaml", {
        "task": "classification",
        "model": {"architecture": "resnet18", "weights": "start.weights.h5"},
        "train": {"epochs": 20, "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}},
    })
    (tmp_path / "base" / "start.weights.h5").write_bytes(b"")
    write(tmp_path / "base" / "shapes64.yaml", {
        "base": "common.yaml",
        "model": {"input_shape": [64, 64, 3]},
        "data": {"train": {"source": "shapes", "path": "data/shapes64", "n": 100}, "batch_size": 8},
    })
    path = write(tmp_path / "recipes" / "r.yaml", {
        "name": "child", "base": "../base/shapes64.yaml",
        "train": {"epochs": 3, "optimizer": {"learning_rate": 0.05}},
        "data": {"train": {"n": 50}},
    })
    recipe = load_recipe(path)
    assert recipe.train.epochs == 3
    assert recipe.train.optimizer.kwargs == {"learning_rate": 0.05, "momentum": 0.9}  # mappings merge
    assert (recipe.data.train.n, recipe.data.train.path, recipe.data.batch_size) == (50, "data/shapes64", 8)
    assert recipe.model.input_shape == [64, 64, 3]
    # a path resolves against the folder of the file that wrote it
    assert recipe.model.weights == str(tmp_path / "base" / "start.weights.h5")
    assert recipe.bases == (tmp_path / "base" / "shapes64.yaml", tmp_path / "base" / "common.yaml")


def test_lists_replace_and_a_new_kind_replaces_the_mapping(tmp_path):
    write(tmp_path / "base.yaml", with_changes(
        MINIMAL, data__augment=["flip", "crop"], train__schedule={"name": "cosine", "warmup_epochs": 2}))
    recipe = load_recipe(write(tmp_path / "r.yaml", {
        "base": "base.yaml", "data": {"augment": ["rotate"]},
        "train": {"schedule": {"name": "step", "boundaries_epochs": [5]}}}))
    assert [a.name for a in recipe.data.augment] == ["rotate"]
    assert isinstance(recipe.train.schedule, StepSchedule)  # cosine's warmup_epochs did not leak in


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", with_changes(MINIMAL, base="b.yaml"))
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    message = error_of(tmp_path / "a.yaml")
    assert "cycle" in message and "a.yaml -> b.yaml -> a.yaml" in message


def test_missing_base_is_an_error(tmp_path):
    message = error_of(write(tmp_path / "r.yaml", with_changes(MINIMAL, base="nowhere.yaml")))
    assert message.startswith("r.yaml: base:") and "'nowhere.yaml' not found" in message


def test_set_overrides_keep_yaml_types(tmp_path):
    path = write(tmp_path / "r.yaml", FULL)
    recipe = load_recipe(path, [
        "train.epochs=3", "train.optimizer.learning_rate=0.01", "data.batch_size=32",
        "model.options.se_ratio=8", "model.options.dropout=0.2", "export.formats=[onnx,tflite]",
        "train.early_stopping=null", "train.steps_per_epoch=5", "data.augment.1.factor=0.2",
    ])
    assert recipe.train.epochs == 3 and recipe.train.optimizer.learning_rate == 0.01
    assert recipe.data.batch_size == 32 and recipe.train.steps_per_epoch == 5
    assert recipe.model.options == {"se_ratio": 8, "dropout": 0.2}
    assert recipe.export.formats == ["onnx", "tflite"] and recipe.train.early_stopping is None
    assert recipe.data.augment[1].kwargs == {"factor": 0.2}


def test_set_creates_mappings_and_switches_kinds(tmp_path):
    path = write(tmp_path / "r.yaml", MINIMAL)
    recipe = load_recipe(path, ["train.early_stopping.patience=2", "train.schedule.name=one_cycle",
                                "train.schedule.pct_start=0.25", "data.train.source=shapes"])
    assert recipe.train.early_stopping.patience == 2 and recipe.train.early_stopping.monitor == "val_loss"
    assert isinstance(recipe.train.schedule, OneCycleSchedule) and recipe.train.schedule.warmup_fraction == 0.25
    assert recipe.data.train.source == "shapes" and recipe.data.val.split == "val"
    recipe = load_recipe(write(tmp_path / "r.yaml", with_changes(
        MINIMAL, data__augment=["translate", {"crop": {"zoom": 0.2}}])), ["data.augment.0.factor=0.3"])
    assert [(a.name, a.kwargs) for a in recipe.data.augment] == [("translate", {"factor": 0.3}),
                                                                 ("crop", {"zoom": 0.2})]


@pytest.mark.parametrize("item, fragments", [
    ("epochz=3", ["--set epochz=3: epochz: unknown field 'epochz'", "'train.epochs'"]),
    ("train.epochz=3", ["--set train.epochz=3: train.epochz: unknown field 'epochz'", "did you mean 'epochs'"]),
    ("train.epochs", ["expected KEY=VALUE"]),
    ("train.epochs=[1", ["not valid YAML"]),
    ("data.augment.7.factor=1", ["data.augment has 2 items"]),
])
def test_bad_set_items(tmp_path, item, fragments):
    message = error_of(write(tmp_path / "r.yaml", with_changes(MINIMAL, data__augment=["flip", "crop"])), [item])
    for fragment in fragments:
        assert fragment in message


def test_val_rule(tmp_path):
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    recipe = load_recipe(write(tmp_path / "r.yaml", with_changes(
        MINIMAL, data__train={"source": "image_folder", "path": "images"})))
    assert recipe.data.val is None  # no split to take it from
    (tmp_path / "val_images").mkdir()
    recipe = load_recipe(write(tmp_path / "r.yaml", with_changes(
        MINIMAL, data__train={"source": "image_folder", "path": "images"}, data__val={"path": "val_images"})))
    assert recipe.data.val.source == "image_folder" and recipe.data.val.path == str(tmp_path / "val_images")
    message = error_of(write(tmp_path / "r.yaml", with_changes(
        MINIMAL, data__train={"source": "image_folder", "path": "images"}, train__early_stopping={})))
    assert "train.early_stopping.monitor: 'val_loss' needs validation data" in message


def _full():
    return yaml.safe_load(FULL)


def _coco(tmp_path):
    (tmp_path / "images").mkdir(exist_ok=True)
    return {"source": "coco", "annotations": "instances_train.json", "images": "images"}


BAD = [
    # (changes to the full recipe, fragments the one-line error must contain)
    (dict(epochz=3), ["epochz: unknown field 'epochz'", "'train.epochs'", "accepted: name, base, task"]),
    (dict(train__epochz=3), ["train.epochz: unknown field 'epochz' (did you mean 'epochs'?)",
                             "accepted: epochs, steps_per_epoch"]),
    (dict(data__batch_size="big"), ["data.batch_size: 'big' is not an integer"]),
    (dict(train__epochs=-1), ["train.epochs: -1 is out of range; accepted: > 0"]),
    (dict(model__architecture="resnet51"), ["model.architecture: 'resnet51' is not a registered architecture",
                                            "did you mean 'resnet50'", "accepted: alexnet"]),
    (dict(model__architecture="inception_v3"), ["model.input_shape: [64, 64, 3] is too small for inception_v3",
                                                "at least 75"]),
    (dict(train__optimizer={"name": "adamm"}), ["train.optimizer.name: 'adamm' is not a Keras optimizer",
                                                "'adam'", "'adamw'", "accepted: adadelta"]),
    (dict(train__optimizer={"name": "sgd", "momentun": 0.9}), [
        "train.optimizer.momentun: sgd takes no argument 'momentun' (did you mean 'momentum'", "nesterov"]),
    (dict(train__optimizer={"name": "sgd", "momentum": "high"}), [
        "train.optimizer.momentum: 'high' does not fit sgd's momentum"]),
    (dict(train__schedule={"name": "cosin"}), ["train.schedule.name: 'cosin' is not a schedule",
                                               "did you mean 'cosine'", "accepted: constant, step, cosine"]),
    (dict(train__schedule={"name": "step", "boundaries_epochs": [5, 30]}), [
        "train.schedule.boundaries_epochs: [5, 30] reaches past training"]),
    (dict(data__augment=["flip", {"name": "rotat"}]), ["data.augment[1].name: 'rotat' is not an augmentation",
                                                       "did you mean 'rotate'", "accepted: flip"]),
    (dict(task="localization"), ["data.augment[2].name: 'mixup' serves classification, not localization",
                                 "accepted for localization: flip"]),
    (dict(data__augment=[{"name": "crop", "zoon": 0.2}]), [
        "data.augment[0].zoon: crop takes no argument 'zoon' (did you mean 'zoom'?)"]),
    (dict(task="detektion"), ["task: 'detektion' is not a task (did you mean 'detection'",
                              "accepted: classification, detection, instance_segmentation, keypoints, "
                              "localization, segmentation, shape3d"]),
    (dict(export__formats=["onnx", "tflite_int9"]), [
        "export.formats[1]: 'tflite_int9' is not an export format (did you mean 'tflite_int8'",
        "accepted: saved_model"]),
    (dict(export__formats=["onnx", "onnx"]), ["export.formats[1]: 'onnx' is listed twice"]),
    (dict(export__formats=["onnx", "tflite_postprocess_op"]), [
        "export.formats[1]: 'tflite_postprocess_op' holds a detector's NMS, and a classification model has none",
        "accepted for classification: saved_model"]),
    (dict(model__weights="missing.weights.h5"), ["model.weights: file", "missing.weights.h5' not found"]),
    (dict(model__weights="w.pt"), ["model.weights: ", "is not a Keras weights file"]),
    (dict(model__options={"se_rati": 4}), ["model.options.se_rati: resnet18 takes no option 'se_rati'",
                                           "did you mean 'se_ratio'"]),
    (dict(model__input_shape=[64, 64]), ["model.input_shape: [64, 64] has 2 items"]),
    (dict(data__train={"source": "cocoa"}), ["data.train.source: 'cocoa' is not a data source",
                                             "did you mean 'coco'", "accepted: shapes, faces, figures, solids, coco"]),
    (dict(data__train={"source": "shapes", "n": 0}), ["data.train.n: 0 is out of range"]),
    (dict(data__normalize="imagenett"), ["data.normalize: 'imagenett' is not a normalization",
                                         "did you mean 'imagenet'"]),
    (dict(train__precision="fp16"), ["train.precision: 'fp16' is not a precision policy"]),
    (dict(data__cache="maybe"), ["data.cache: 'maybe' is not true or false"]),
    (dict(name="a/b"), ["name: 'a/b' cannot name a folder"]),
    (dict(model={"input_shape": [64, 64, 3]}), ["model.architecture: missing required field"]),
]


@pytest.mark.parametrize("changes, fragments", BAD, ids=[next(iter(c)) + "=" + str(next(iter(c.values())))
                                                          for c, _ in BAD])
def test_bad_recipe_gives_one_line_naming_the_field(tmp_path, changes, fragments):
    message = error_of(write(tmp_path / "bad.yaml", with_changes(_full(), **changes)))
    assert message.startswith("bad.yaml: ")
    for fragment in fragments:
        assert fragment in message, message


def test_missing_coco_annotations(tmp_path):
    message = error_of(write(tmp_path / "r.yaml", with_changes(_full(), data__train=_coco(tmp_path),
                                                               data__val=None)))
    assert message.startswith("r.yaml: data.train.annotations: file ")
    assert f"{tmp_path / 'instances_train.json'}' not found" in message


def test_existing_coco_source_resolves_paths(tmp_path):
    (tmp_path / "instances_train.json").write_text("{}")
    recipe = load_recipe(write(tmp_path / "r.yaml", with_changes(
        _full(), data__train=_coco(tmp_path), data__val=None, train__early_stopping=None)))
    assert recipe.data.train.images == str(tmp_path / "images") and recipe.data.val is None


def test_error_names_the_file_that_set_the_value(tmp_path):
    write(tmp_path / "base.yaml", with_changes(MINIMAL, train__epochs=0))
    message = error_of(write(tmp_path / "child.yaml", {"base": "base.yaml", "name": "c"}))
    assert message.startswith("base.yaml: train.epochs: 0 is out of range")


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path / "r.yaml", "name: x\nmodel:\n  architecture: resnet18\n   input_shape: [1]\n")
    message = error_of(path)
    assert message.startswith("r.yaml: line 4") and "invalid YAML" in message


def test_top_level_must_be_a_mapping(tmp_path):
    assert "expected a mapping" in error_of(write(tmp_path / "r.yaml", "- a\n- b\n"))


def test_injected_augmentation_table_checks_arguments(tmp_path):
    def flip(mode="horizontal", seed=None):
        return None

    path = write(tmp_path / "r.yaml", with_changes(MINIMAL, data__augment=[{"name": "flip", "mod": "vertical"}]))
    with pytest.raises(RecipeError, match=r"data\.augment\[0\]\.mod: flip takes no argument 'mod' "
                                          r"\(did you mean 'mode'\?\)"):
        load_recipe(path, augmentations={"flip": flip})


def test_validate_recipe_from_a_mapping():
    recipe = validate_recipe(with_changes(MINIMAL, train__optimizer="SGD"))
    assert recipe.train.optimizer.name == "sgd" and recipe.source_path is None
    assert recipe.train.optimizer.learning_rate == 0.01  # SGD's own default, spelled out
    with pytest.raises(RecipeError, match=r"^cfg: train\.epochs: "):
        validate_recipe(with_changes(MINIMAL, train__epochs=0), source="cfg")


def test_json_schema_has_the_sections():
    schema = recipe_json_schema()
    assert {"name", "base", "task", "model", "data", "train", "export"} <= set(schema["properties"])
    assert schema["required"] == ["name", "model", "data"]
    assert schema["additionalProperties"] is False


def test_import_is_light():
    code = "import sys, convforge.recipes; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fallback_names_when_no_table_is_given(tmp_path):
    from convforge.recipes import AUGMENTATION_NAMES

    path = write(tmp_path / "r.yaml", with_changes(MINIMAL, task="localization", data__augment=["flip", "cutmix"]))
    with pytest.raises(RecipeError, match=r"data\.augment\[1\]\.name: 'cutmix' serves classification, not "):
        load_recipe(path, augmentations=AUGMENTATION_NAMES)
    assert load_recipe(path, ["data.augment=[flip, {name: flip, anything: 1}]"],
                       augmentations=AUGMENTATION_NAMES).data.augment[1].kwargs == {"anything": 1}


# ------------------------------------------------------------------------------------- facts without Keras

BLOCK_TENSORFLOW = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "jax", "torch"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
from convforge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["check", "recipes/localization/resnet18_shapes_loc.yaml", "--set",
                                   "train.optimizer={name: sgd, learning_rate: 1e-2, clipnorm: 1.0}"],
                                  ["check", "recipes/classification/lenet5_digits.yaml"], ["recipe-schema"]])
def test_check_and_schema_need_no_tensorflow(argv):
    """Validating a recipe reads the registry, the optimizer table and the task registry as data."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW, *argv], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "blocked" not in proc.stderr


def test_models_reads_the_shipped_table_without_tensorflow(tmp_path):
    """`convforge models` on a fresh install builds nothing. When this fails after a change to backbones/,
    layers/ or registry.py, regenerate the shipped table: `make bench`, or
    python -c "from convforge.bench.models import *; write_shipped(model_table('*', cache_dir='/tmp/x'))"."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "CONVFORGE_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW, "models", "resnet1*"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "11,689,512" in proc.stdout  # resnet18, PyTorch's count
    assert "building" not in proc.stderr


def test_optimizer_table_matches_the_installed_keras():
    from convforge.recipes.optimizers import OPTIMIZERS, live_table

    assert OPTIMIZERS == live_table()


def test_builder_options_are_read_from_source_like_the_signature():
    import inspect

    from convforge.registry import get_spec, list_models

    from convforge.heads import classification

    def options_of(function, *set_by_build):
        return tuple(p for p in inspect.signature(function).parameters if p not in set_by_build)

    for name in list_models():
        spec = get_spec(name)
        assert spec.backbone_option_names == options_of(spec.builder, "input_shape", "name"), name
        top = options_of(classification.TOPS[spec.top], "x", "num_classes")
        assert spec.top_option_names == top + (("aux_logits",) if spec.aux_taps else ()), name
        assert spec.option_names == spec.backbone_option_names + spec.top_option_names


def test_shapes_classes_and_rotation_are_recipe_fields(tmp_path):
    """A detection set can be drawn from a subset of the shapes, unrotated; the schema's names are the
    generator's."""
    from convforge.data.shapes import SHAPE_CLASSES
    from convforge.recipes.schema import SHAPE_NAMES
    from convforge.train.datasets import open_source

    assert SHAPE_NAMES == SHAPE_CLASSES
    root = Path(__file__).resolve().parents[1]
    recipe = load_recipe(root / "recipes" / "classification" / "resnet18_shapes.yaml", overrides=[
        f"data.train.path={tmp_path / 's'}", "data.train.n=12", "data.train.classes=[star, circle]",
        "data.train.rotate=false", "data.train.objects=[1,3]"])
    records = open_source(recipe.data.train, strict=True)
    assert records.class_names == ["star", "circle"]
    with pytest.raises(RecipeError, match="data.train.classes"):
        load_recipe(root / "recipes" / "classification" / "resnet18_shapes.yaml",
                    overrides=["data.train.classes=[star, hexagon]"])
