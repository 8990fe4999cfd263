"""convforge: classic convolutional networks for vision tasks, from one recipe to a verified edge artifact.

The public Python API. Names resolve lazily, so `import convforge` (and the CLI's argument parsing) does not
pay for importing TensorFlow until a model is built.

Examples:
    >>> import convforge
    >>> convforge.list_models("resnet*")[:3]
    ['resnet101', 'resnet152', 'resnet18']
    >>> model = convforge.build_model("resnet18", num_classes=10, input_shape=(64, 64, 3))
    >>> convforge.receptive_fields(model)["C5"].size
    (435, 435)
"""
from convforge._api import lazy_names

from convforge.errors import ConvforgeError, DataError, ExportError, ModelError, RecipeError

__version__ = "0.1.0"

_API = {
    "build_backbone": "convforge.backbones",
    "feature_levels": "convforge.backbones",
    "level_strides": "convforge.backbones",
    "build_model": "convforge.tasks",
    "convolutionalize": "convforge.heads.sliding_window",
    "TASKS": "convforge.tasks",
    "list_models": "convforge.registry",
    "get_spec": "convforge.registry",
    "conv_output_size": "convforge.convmath",
    "conv_transpose_output_size": "convforge.convmath",
    "pool_output_size": "convforge.convmath",
    "receptive_fields": "convforge.convmath",
    "count_macs": "convforge.convmath",
    "count_params": "convforge.convmath",
    "layer_table": "convforge.convmath",
    "draw_receptive_fields": "convforge.visualize",
    "model_table": "convforge.bench",
    "load_recipe": "convforge.recipes",
    "train": "convforge.train",
    "export": "convforge.export",
    "evaluate": "convforge.runs",
    "export_run": "convforge.runs",
    "verify_dir": "convforge.export",
    "build_dataset": "convforge.data",
}

__all__ = sorted(_API) + ["ConvforgeError", "DataError", "ExportError", "ModelError", "RecipeError"]


__getattr__ = lazy_names(__name__, _API)


def __dir__():
    return __all__
