"""Tasks: a registry of everything task-specific (head, losses, metrics, targets, decoding), one file each.

Adding a task is adding a module here (and its head under heads/) whose Task subclass carries
`@register_task`; every module of this package is imported on the first look-up, so the registry knows the
built-in tasks without a list. A task registered from anywhere else (a user's module, a test) counts alike.
"""
import importlib
import pkgutil

from convforge.errors import ModelError, close_matches
from convforge.tasks.base import Parser, Task

_REGISTRY = {}
_DISCOVERED = []

__all__ = ["Task", "Parser", "register_task", "unregister_task", "get_task", "task_class", "task_names",
           "task_of_model", "load_model", "build_model", "TASKS"]


def register_task(cls):
    """Class decorator: register a Task subclass under its `name` (a later one of the same name replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, Task) and cls.name):
        raise ModelError(f"{cls!r} cannot be registered as a task; accepted: a Task subclass with a name")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_task(name):
    """Remove a registered task (a plugin's or a test's); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def _discover():
    """Import every module of this package once, so the built-in tasks register themselves."""
    if _DISCOVERED:
        return
    _DISCOVERED.append(True)
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def task_names():
    """The names of every registered task, sorted."""
    _discover()
    return tuple(sorted(_REGISTRY))


def task_class(name):
    """The Task subclass registered as `name`, or raise ModelError listing the accepted names."""
    _discover()
    if name not in _REGISTRY:
        raise ModelError(f"unknown task {name!r}{close_matches(str(name), _REGISTRY)}; accepted: "
                         f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_task(name, options=None, **kwargs):
    """Return the Task object for a task name with its head options (a recipe's `head:` section)."""
    return task_class(name)(options, **kwargs)


def task_of_model(model, folder=None):
    """The Task a trained model was made for: its run's recipe.yaml when `folder` has one, else the one task
    whose output structure the model has; raise ModelError when neither tells."""
    import pathlib

    if folder is not None and (pathlib.Path(folder) / "recipe.yaml").exists():
        import yaml

        data = yaml.safe_load((pathlib.Path(folder) / "recipe.yaml").read_text(encoding="utf-8")) or {}
        return get_task(data.get("task", "classification"), data.get("head") or {})
    _discover()
    matches = [cls for cls in _REGISTRY.values() if cls.recognizes(model)]
    if len(matches) != 1:
        found = ", ".join(sorted(c.name for c in matches)) or "none"
        raise ModelError(f"cannot tell the task of model {model.name!r} (its outputs fit: {found}); accepted: a "
                         f"model.keras inside its run folder (with recipe.yaml)")
    return matches[0]()


def __getattr__(name):
    # TASKS stays a name of this package for callers that read it; it is the registry's current list.
    if name == "TASKS":
        return task_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(path, precision="trained"):
    """Load a trained .keras model (no compile state), as trained or as its float32 copy (what exports compute).

    Convforge's custom layers are registered first. precision="float32" turns a mixed_bfloat16/mixed_float16
    model into the same model computing in float32 with the same weights (a float32 model is returned as is).
    """
    import keras

    # Importing the layer and head modules runs their register_keras_serializable decorators (BoxOrder, LRN,
    # ImageFilter ...); without them a localization model cannot be read back in a fresh process.
    import convforge.heads  # noqa: F401
    import convforge.layers  # noqa: F401

    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r} is not accepted; accepted: {', '.join(PRECISIONS)}")
    check_keras_file(path)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises ValueError, TypeError, KeyError, OSError ... for a bad archive
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ModelError(f"model file {str(path)!r} could not be loaded ({type(error).__name__}: {first[:200]}); "
                         f"accepted: a .keras file saved by Keras 3 whose layers are Keras' or convforge's "
                         f"(no Lambda layers: safe mode refuses code in a model file)") from None
    if precision == "float32":
        from convforge.precision import float32_copy

        model = float32_copy(model)
    return model


PRECISIONS = ("trained", "float32")
# A .keras archive's config.json describes layers, not weights: megabytes at most. Anything past these bounds
# is a zip bomb or not a model, and is refused before Keras inflates it.
MAX_CONFIG_BYTES = 64 * 2 ** 20
MAX_ARCHIVE_RATIO = 200


def check_keras_file(path):
    """Raise ModelError unless `path` is an existing .keras zip whose declared sizes are sane (no zip bomb)."""
    import os
    import zipfile

    path = str(path)
    if not os.path.isfile(path):
        raise ModelError(f"model file {path!r} does not exist; accepted: a .keras file (a run's model.keras)")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelError(f"model file {path!r} is not a .keras archive ({error}); accepted: a .keras file saved "
                         f"by Keras 3") from None
    if "config.json" not in entries:
        raise ModelError(f"model file {path!r} has no config.json; accepted: a .keras file saved by Keras 3")
    declared = sum(info.file_size for info in entries.values())
    if entries["config.json"].file_size > MAX_CONFIG_BYTES or declared > MAX_ARCHIVE_RATIO * os.path.getsize(path):
        raise ModelError(f"model file {path!r} declares {declared / 2 ** 20:.0f} MiB inflated from "
                         f"{os.path.getsize(path) / 2 ** 20:.1f} MiB (config.json "
                         f"{entries['config.json'].file_size / 2 ** 20:.0f} MiB); refused as a zip bomb; accepted: a "
                         f".keras file saved by Keras 3")


def build_model(name, task="classification", num_classes=None, input_shape=None, head=None, **options):
    """Build the keras.Model of architecture `name` for `task`; `head`: the task's head options (a dict)."""
    from convforge.registry import get_spec

    task_obj = get_task(task, head)
    spec = get_spec(name)
    dtype = options.pop("dtype", None)
    return task_obj.build_model(spec.name, input_shape, spec.num_classes if num_classes is None else num_classes,
                                options, dtype=dtype)
