"""Tasks: a registry of everything task-specific (head, losses, metrics, targets, decoding), one file each.

Adding a task is adding a module here (and its head under heads/) whose Task subclass carries
`@register_task`; every module of this package is imported on the first look-up, so the registry knows the
built-in tasks without a list. A task registered from anywhere else (a user's module, a test) counts alike.
"""
import importlib
import pkgutil

from convforge.errors import ModelError, close_matches
from convforge.modelfile import load_model  # noqa: F401  (a trained model's file, read safely; re-exported)
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


def build_model(name, task="classification", num_classes=None, input_shape=None, head=None, **options):
    """Build the keras.Model of architecture `name` for `task`; `head`: the task's head options (a dict), or a head's
    name (head="faster_rcnn" means {"name": "faster_rcnn"}), whose options may then come as keywords too; the other
    keyword options are the backbone's."""
    from convforge.registry import get_spec, require_levels

    if isinstance(head, str):
        fields = set(task_class(task).options_class({"name": head}).model_fields) - {"name"}
        head = {"name": head, **{k: options.pop(k) for k in list(options) if k in fields}}
    task_obj = get_task(task, head)
    spec = get_spec(name)
    dtype = options.pop("dtype", None)
    require_levels(spec.name, task_obj.levels, options, who=f"the {task_obj.name} head")
    model = task_obj.build_model(spec.name, input_shape, spec.num_classes if num_classes is None else num_classes,
                                 options, dtype=dtype)
    return task_obj.public_model(model)
