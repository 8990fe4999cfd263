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


PRECISIONS = ("trained", "float32")


def load_model(path, precision="trained"):
    """Load a trained .keras model (no compile state), as trained or as its float32 copy (what exports compute).

    Convforge's custom layers are registered first. precision="float32" turns a mixed_bfloat16/mixed_float16
    model into the same model computing in float32 with the same weights (a float32 model is returned as is).
    """
    import keras

    # Importing the task and layer modules runs their register_keras_serializable decorators (BoxOrder, LRN,
    # ImageFilter ...); without them a localization model cannot be read back in a fresh process.
    import convforge.layers  # noqa: F401
    import convforge.tasks.classification  # noqa: F401
    import convforge.tasks.localization  # noqa: F401

    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r} is not accepted; accepted: {', '.join(PRECISIONS)}")
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    if precision == "float32":
        from convforge.precision import float32_copy

        model = float32_copy(model)
    return model


def build_model(name, task="classification", num_classes=None, input_shape=None, **options):
    """Build the keras.Model of architecture `name` for `task` ("classification" or "localization")."""
    from convforge.registry import get_spec

    task_obj = get_task(task)
    spec = get_spec(name)
    dtype = options.pop("dtype", None)
    return task_obj.build_model(spec.name, input_shape, spec.num_classes if num_classes is None else num_classes,
                                options, dtype=dtype)
