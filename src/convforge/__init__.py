"""convforge: classic convolutional networks for vision tasks, from one recipe to a verified edge artifact.

The public Python API. Examples:
    >>> import convforge
    >>> convforge.list_models("resnet*")[:3]
    ['resnet101', 'resnet152', 'resnet18']
    >>> model = convforge.build_model("resnet18", num_classes=10, input_shape=(64, 64, 3))
    >>> convforge.receptive_fields(model)["C5"].size
    (435, 435)
"""
from convforge.backbones import build_backbone, feature_levels, level_strides
from convforge.convmath import (conv_output_size, conv_transpose_output_size, count_macs, count_params,
                                pool_output_size, receptive_fields)
from convforge.errors import ConvforgeError, DataError, ExportError, ModelError, RecipeError
from convforge.registry import get_spec, list_models
from convforge.tasks import TASKS, build_model

__version__ = "0.1.0"

__all__ = [
    "build_backbone", "build_model", "feature_levels", "level_strides", "list_models", "get_spec", "TASKS",
    "conv_output_size", "conv_transpose_output_size", "pool_output_size", "receptive_fields", "count_macs",
    "count_params", "ConvforgeError", "DataError", "ExportError", "ModelError", "RecipeError",
]
