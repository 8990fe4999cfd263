"""Recipes: YAML files that say what to build, train and export, validated into a `Recipe`.

Examples:
    >>> from convforge.recipes import load_recipe
    >>> recipe = load_recipe("recipes/classification/resnet18_shapes.yaml", overrides=["train.epochs=1"])
    >>> recipe.to_dict()["train"]["epochs"]
    1
"""
from convforge.recipes.load import describe_validation_error, load_recipe, recipe_json_schema, validate_recipe
from convforge.recipes.schema import (AUGMENTATION_NAMES, DISTRIBUTIONS, EXPORT_FORMATS, PRECISIONS, SCHEDULES,
                                      SOURCES, TASKS, Augmentation, CocoSource, ConstantSchedule, CosineSchedule,
                                      DataSection, DigitsSource, EarlyStopping, ExportSection, ImageFolderSource,
                                      ModelSection, NormalizeStats, OneCycleSchedule, OptimizerConfig, Recipe,
                                      ShapesSource, StepSchedule, TFRecordSource, TrainSection, VocSource)

__all__ = [
    "load_recipe", "validate_recipe", "recipe_json_schema", "describe_validation_error",
    "Recipe", "ModelSection", "DataSection", "TrainSection", "ExportSection",
    "ShapesSource", "CocoSource", "VocSource", "ImageFolderSource", "TFRecordSource", "DigitsSource",
    "NormalizeStats", "Augmentation", "OptimizerConfig", "EarlyStopping",
    "ConstantSchedule", "StepSchedule", "CosineSchedule", "OneCycleSchedule",
    "TASKS", "PRECISIONS", "DISTRIBUTIONS", "EXPORT_FORMATS", "SOURCES", "SCHEDULES", "AUGMENTATION_NAMES",
]
