"""The serving function every format is converted from, and the TF SavedModel written around it.

One `tf.function` takes `image` (float32, [None, H, W, C], normalized like the training data) and returns a
dict of outputs named by meaning. The SavedModel, the TFLite converter (through a SavedModel) and tf2onnx all
start from it, so the three runtimes see the same graph and the same names.
"""
import re

from convforge.errors import ExportError
from convforge.preprocessing import preprocess

INPUT_NAME = "image"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def input_spec(model):
    """Return (H, W, C) of a model's single float32 NHWC image input, or raise ExportError."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ExportError(f"model {getattr(model, 'name', model)!r} has no known input; accepted: a built "
                          f"Keras model with one image input (call it once or build it with an input_shape)")
    if len(inputs) != 1:
        raise ExportError(f"model {model.name!r} has {len(inputs)} inputs; accepted: exactly one image input "
                          f"[batch, H, W, C]")
    shape, dtype = tuple(inputs[0].shape), str(inputs[0].dtype)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ExportError(f"model {model.name!r} input shape {shape} is not a static NHWC image; accepted: "
                          f"(None, H, W, C) with H, W and C known")
    if dtype != "float32":
        raise ExportError(f"model {model.name!r} input dtype {dtype} is not accepted; accepted: float32 "
                          f"(normalized images)")
    return tuple(int(d) for d in shape[1:])


def flatten_outputs(outputs):
    """Return a model's outputs as a list, in the order output names are given to them."""
    if isinstance(outputs, dict):
        return list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _producer(tensor):
    """The layer (or op) that computes a symbolic Keras tensor, or None for a tensor without history."""
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def output_tensors(model):
    """The model's symbolic outputs as {key: tensor}: dict keys, list indices, or None for a single output."""
    structure = model.output
    if isinstance(structure, dict):
        return dict(structure)
    if isinstance(structure, (list, tuple)):
        return dict(enumerate(structure))
    return {None: structure}


def output_kind(tensor):
    """What an output holds, read from the model's structure: "integer" (an integer dtype: class ids,
    counts), "probabilities" (made by a softmax activation) or "values"."""
    dtype = str(getattr(tensor, "dtype", "float32"))
    if "int" in dtype or dtype == "bool":
        return "integer"
    activation = getattr(_producer(tensor), "activation", None)
    return "probabilities" if getattr(activation, "__name__", "") == "softmax" else "values"


def resolve_output_names(model, outputs, output_names=None):
    """Name each output of a call result `outputs`: `output_names` when given, else dict keys, else the
    producing layers' names, with `probabilities` for a single softmax output; never guessed from values."""
    flat = flatten_outputs(outputs)
    if output_names is not None:
        if isinstance(output_names, dict):
            if not isinstance(outputs, dict) or set(output_names) - set(outputs):
                have = list(outputs) if isinstance(outputs, dict) else "no keys"
                raise ExportError(f"output_names={output_names!r} renames outputs the model does not have "
                                  f"({have}); accepted: a dict over the model's output keys or a list with one "
                                  f"name per output")
            names = [output_names.get(k, k) for k in outputs]
        else:
            names = [output_names] if isinstance(output_names, str) else list(output_names)
            if len(names) != len(flat):
                raise ExportError(f"output_names={output_names!r} gives {len(names)} names for {len(flat)} "
                                  f"model outputs; accepted: one name per output")
    elif isinstance(outputs, dict):
        names = [str(k) for k in outputs]
    else:
        tensors = list(output_tensors(model).values())
        if len(tensors) == 1 and output_kind(tensors[0]) == "probabilities":
            names = ["probabilities"]
        else:
            names = [getattr(_producer(t), "name", None) for t in tensors]
            if not all(isinstance(n, str) and _NAME.match(n) and n != INPUT_NAME for n in names) or (
                    len(set(names)) != len(names)):
                names = ["output"] if len(tensors) == 1 else [f"output_{i}" for i in range(len(tensors))]
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name) or name == INPUT_NAME:
            raise ExportError(f"output name {name!r} cannot name a signature output; accepted: letters, digits "
                              f"and '_' (not starting with a digit), other than {INPUT_NAME!r}")
    if len(set(names)) != len(names):
        raise ExportError(f"output names {names} repeat a name; accepted: one distinct name per output")
    return names


def output_kinds(model, outputs, names):
    """{name: kind} of a call result's outputs named by resolve_output_names (see output_kind)."""
    tensors = output_tensors(model)
    keys = list(outputs) if isinstance(outputs, dict) else list(tensors)
    return {name: output_kind(tensors[key]) for name, key in zip(names, keys)}


def serving_function(model, output_names, preprocessing=None):
    """Return the tf.function `image -> {name: output}`; with preprocessing, `image` is uint8 of any size."""
    import tensorflow as tf

    height, width, channels = input_spec(model)
    if preprocessing is None:
        signature = tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)
    else:
        signature = tf.TensorSpec([None, None, None, channels], tf.uint8, name=INPUT_NAME)

    @tf.function(input_signature=[signature])
    def serve(image):
        """The model's outputs, by name, for one batch."""
        x = image if preprocessing is None else preprocess(image, preprocessing)
        flat = flatten_outputs(model(x, training=False))
        # Mixed-precision models compute in float16; every runtime is compared in float32. Integer outputs
        # (class ids, counts) stay integers, as int32: TFLite has no int64 outputs on every delegate.
        return {name: tf.cast(y, tf.int32 if y.dtype.is_integer else tf.float32)
                for name, y in zip(output_names, flat)}

    return serve


def write_saved_model(model, serve, path):
    """Write a SavedModel whose `serving_default` signature is `serve`."""
    import keras

    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoint already captures every variable it reads, and tracking the model
    # as well stores each weight a second time (Keras 3.15 saves both lists), doubling the SavedModel.
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(path), verbose=False)
    return path
