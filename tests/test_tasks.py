"""The task registry: built-in tasks found without a list, a task added from outside trains end to end, head
options are typed recipe fields, and augmentations are matched to the annotation kinds a task needs."""
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

import convforge
from convforge.cli import main as cli_main
from convforge.errors import ModelError, RecipeError
from convforge.recipes import load_recipe
from convforge.tasks import (Parser, Task, get_task, register_task, task_names, task_of_model,
                             unregister_task)
from smallmodels import tiny

ROOT = Path(__file__).resolve().parents[1]
LOC = ROOT / "recipes" / "localization" / "resnet18_shapes_loc.yaml"
DIGITS = ROOT / "recipes" / "classification" / "lenet5_digits.yaml"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_builtin_tasks_register_themselves():
    assert {"classification", "localization"} <= set(task_names())
    assert get_task("localization").headline_metric == "accuracy_at_iou50"
    with pytest.raises(ModelError, match=r"unknown task 'localisation' \(did you mean 'localization'"):
        get_task("localisation")


def _count_target(example, context):
    """How many objects the image holds."""
    import tensorflow as tf

    return tf.cast(tf.shape(example["classes"])[0], tf.float32)


class CountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_units: int = 16


class ObjectCount(Task):
    """A toy task defined in this test file only: regress the number of shapes in the image."""

    name = "object_count_test"
    headline_metric = "within_half"
    annotations = frozenset({"label", "boxes"})
    Options = CountOptions
    parser = Parser(keeps_record=lambda r: True, keeps_example=lambda e: True, target=_count_target)

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        import keras

        backbone = convforge.build_backbone(architecture, input_shape=input_shape, include_top=False,
                                            pooling="avg", **(options or {}))
        hidden = keras.layers.Dense(self.options.hidden_units, activation="relu")(backbone.output)
        count = keras.layers.Dense(1, name="count")(hidden)
        return keras.Model(backbone.input, keras.layers.Reshape(())(count), name="counter")

    def compile_args(self, model, **_):
        import keras

        return dict(loss="mse", metrics=[keras.metrics.MeanAbsoluteError(name="mae")])

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        errors = [np.abs(np.asarray(model(x, training=False)) - np.asarray(y)) for x, y in dataset]
        errors = np.concatenate(errors)
        return {"mae": float(errors.mean()), "within_half": float((errors < 0.5).mean())}

    def boxes_of(self, targets):
        raise AssertionError("no augmentation moves boxes in this test")


class Pyramid(Task):
    """A toy head that reads three feature levels, as detection and segmentation heads do."""

    name = "pyramid_test"
    levels = ("C3", "C4", "C5")

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        import keras

        backbone = convforge.build_backbone(architecture, input_shape=input_shape, include_top=False,
                                            **(options or {}))
        found = convforge.feature_levels(backbone)
        return keras.Model(backbone.input, [found[lv] for lv in self.levels])


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """Register the test's tasks for this module only, so other modules see the built-in registry."""
    register_task(ObjectCount)
    register_task(Pyramid)
    yield
    unregister_task(ObjectCount.name)
    unregister_task(Pyramid.name)


def test_a_task_registered_outside_convforge_trains_through_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = tiny(LOC, shapes_dir=tmp_path / "shapes", epochs=3, steps=4) + [
        "task=object_count_test", "head={hidden_units: 8}", "data.train.objects=[1,3]", "data.augment=[]",
        "model.options={depths: [1,1,1,1], widths: [8,16,32,64]}", "train.optimizer.learning_rate=0.01"]
    recipe = load_recipe(LOC, overrides=sets)
    assert recipe.task == "object_count_test" and recipe.head == {"hidden_units": 8}
    result = convforge.train(recipe, printer=lambda *_: None, verbose=0)
    history = [json.loads(json.dumps(r)) for r in
               __import__("csv").DictReader(open(Path(result["run_dir"]) / "history.csv"))]
    losses = [float(r["loss"]) for r in history]
    assert losses[-1] < losses[0]
    assert {"val_mae", "val_within_half"} <= set(result["metrics"])


@pytest.mark.parametrize("sets, message", [
    (["head={box_loss: iou}"], "head.box_loss"),
    (["head={box_los: giou}"], "unknown field (did you mean 'box_loss'"),
    (["head={box_loss_weight: -1}"], "head.box_loss_weight"),
    (["task=localisation"], "'localisation' is not a task (did you mean 'localization'"),
])
def test_head_options_are_typed_recipe_fields(sets, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_recipe(LOC, overrides=sets)


def test_head_options_reach_the_task():
    recipe = load_recipe(LOC, overrides=["head={box_loss: l1, box_loss_weight: 2.0}"])
    task = get_task(recipe.task, recipe.head)
    assert task.options.box_loss == "l1" and task.options.box_loss_weight == 2.0
    assert load_recipe(LOC).head == {"box_loss": "giou", "box_loss_weight": 1.0, "reduce_channels": 32,
                                     "hidden_units": 256}


def test_an_augmentation_that_cannot_carry_boxes_is_refused_at_check(capsys):
    assert cli_main(["check", str(LOC), "--set", "data.augment=[flip, mixup]"]) == 2
    err = capsys.readouterr().err
    assert "data.augment[1].name" in err and "cannot carry the boxes that localization needs" in err
    assert "flip" in err.split("accepted for localization:")[1]


def test_a_bare_model_is_matched_to_its_task_by_its_outputs():
    loc = convforge.build_model("lenet5", task="localization", num_classes=3, input_shape=(32, 32, 1))
    cls = convforge.build_model("lenet5", num_classes=3, input_shape=(32, 32, 1))
    assert task_of_model(loc).name == "localization" and task_of_model(cls).name == "classification"


def test_a_head_needing_levels_a_backbone_lacks_fails_naming_them(capsys):
    """squeezenet ends at C4 (stride 16): a head on C3-C5 is refused at check and at build, in one line."""
    message = ("squeezenet1_1 has feature levels C1 (stride 2), C2 (stride 4), C3 (stride 8), C4 (stride 16); "
               "the pyramid_test head needs C3, C4, C5, and C5 is missing")
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(LOC, overrides=["task=pyramid_test", "model.architecture=squeezenet1_1", "model.options={}"])
    assert cli_main(["check", str(LOC), "--set", "task=pyramid_test", "--set", "model.architecture=lenet5",
                     "--set", "model.options={}", "--set", "model.input_shape=[32,32,1]"]) == 2
    err = capsys.readouterr().err
    assert "model.architecture: lenet5 has feature levels C1 (stride 2), C2 (stride 4)" in err
    assert "C3, C4, C5 are missing" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelError, match="C5 is missing"):
        convforge.build_model("squeezenet1_1", task="pyramid_test", input_shape=(64, 64, 3))
    c3, c4, c5 = convforge.build_model("resnet18", task="pyramid_test", input_shape=(64, 64, 3)).outputs
    assert (c3.shape[1], c4.shape[1], c5.shape[1]) == (8, 4, 2)


def test_classification_top_options_are_refused_for_other_heads():
    with pytest.raises(RecipeError, match="model.options.dropout: 'dropout' is an option of resnet18's "
                                          "classification top, which the localization task does not use"):
        load_recipe(LOC, overrides=["model.options={dropout: 0.2}"])
    assert load_recipe(DIGITS, overrides=["model.options={dropout: 0.2}"]).model.options == {"dropout": 0.2}


def test_evaluation_examples_take_the_parsers_eval_target(tmp_path):
    """A parser may give evaluation its own target (ground truth to score) while training gets another."""
    import dataclasses

    from convforge import data

    splits = data.ensure_shapes(tmp_path / "shapes", n=24, size=32, objects=(1, 3))
    records = data.coco(*splits["train"])
    task = ObjectCount()
    task.parser = dataclasses.replace(ObjectCount.parser, eval_target=lambda e, c: -_count_target(e, c))
    train = data.build_dataset(records, task, (32, 32, 3), 8, True, augment=[], seed=0)
    val = data.build_dataset(records, task, (32, 32, 3), 8, False)
    counts = np.concatenate([np.asarray(t) for _, t in val])
    assert (counts < 0).all() and (np.concatenate([np.asarray(t) for _, t in train]) > 0).all()
    assert sorted(-counts) == sorted(len(r["objects"]) for r in records)
