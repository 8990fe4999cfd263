"""Tasks: a backbone plus the head, losses, metrics and decoding of one vision task."""
from convforge.errors import ModelError, close_matches

TASKS = ("classification", "localization")


def get_task(name):
    """Return the Task object for a task name, or raise ModelError listing the accepted names."""
    if name == "classification":
        from convforge.tasks.classification import Classification

        return Classification()
    if name == "localization":
        from convforge.tasks.localization import Localization

        return Localization()
    raise ModelError(f"unknown task {name!r}{close_matches(name, TASKS)}; accepted: {', '.join(TASKS)}")


def load_model(path):
    """Load a trained .keras model (no compile state), with convforge's custom layers registered first."""
    import keras

    # Importing the task and layer modules runs their register_keras_serializable decorators (BoxOrder, LRN,
    # ImageFilter ...); without them a localization model cannot be read back in a fresh process.
    import convforge.layers  # noqa: F401
    import convforge.tasks.classification  # noqa: F401
    import convforge.tasks.localization  # noqa: F401

    return keras.models.load_model(path, compile=False, safe_mode=True)


def build_model(name, task="classification", num_classes=None, input_shape=None, **options):
    """Build the keras.Model of architecture `name` for `task` ("classification" or "localization")."""
    from convforge.registry import get_spec

    task_obj = get_task(task)
    spec = get_spec(name)
    dtype = options.pop("dtype", None)
    return task_obj.build_model(spec.name, input_shape, spec.num_classes if num_classes is None else num_classes,
                                options, dtype=dtype)
