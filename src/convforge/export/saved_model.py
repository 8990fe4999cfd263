"""The serving function every format is converted from, and the TF SavedModel written around it.

One `tf.function` takes `image` (float32, [None, H, W, C], normalized like the training data) and returns a
dict of outputs named by meaning. The SavedModel, the TFLite converter (through a SavedModel) and tf2onnx all
start from it, so the three runtimes see the same graph and the same names.
"""
import re

import numpy as np

from convforge.errors import ExportError, close_matches

INPUT_NAME = "image"
PREPROCESSING_KEYS = ("resize", "channels", "interpolation", "scale", "mean", "std", "round")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
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


def looks_like_probabilities(array):
    """True for a rank-2 output whose rows are non-negative and sum to one (a softmax)."""
    array = np.asarray(array, dtype="float64")
    return (array.ndim == 2 and array.shape[1] > 1 and array.min() >= 0
            and np.allclose(array.sum(axis=1), 1.0, atol=1e-3))


def resolve_output_names(outputs, output_names=None):
    """Name each model output: dict keys, `output_names`, `probabilities` for one softmax, else output_<i>."""
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
    elif len(flat) == 1:
        names = ["probabilities" if looks_like_probabilities(flat[0]) else "output"]
    else:
        names = [f"output_{i}" for i in range(len(flat))]
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name) or name == INPUT_NAME:
            raise ExportError(f"output name {name!r} cannot name a signature output; accepted: letters, digits "
                              f"and '_' (not starting with a digit), other than {INPUT_NAME!r}")
    if len(set(names)) != len(names):
        raise ExportError(f"output names {names} repeat a name; accepted: one distinct name per output")
    return names


def check_preprocessing(preprocessing, channels):
    """Return a complete preprocessing dict (defaults filled in), or raise ExportError naming the bad key."""
    if not isinstance(preprocessing, dict):
        raise ExportError(f"preprocessing={preprocessing!r} is not accepted; accepted: a dict like "
                          f"{{'resize': [H, W], 'channels': C, 'scale': 1/255, 'mean': [...], 'std': [...]}}")
    for key in preprocessing:
        if key not in PREPROCESSING_KEYS:
            raise ExportError(f"preprocessing key {key!r} is unknown{close_matches(key, PREPROCESSING_KEYS)}; "
                              f"accepted: {', '.join(PREPROCESSING_KEYS)}")
    # The data pipeline rounds resized images back to uint8 before normalizing, so serving does the same.
    spec = {"interpolation": "bilinear", "scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels,
            "channels": channels, "round": True, **preprocessing}
    if "resize" not in preprocessing:
        raise ExportError("preprocessing has no 'resize'; accepted: 'resize': [H, W] of the model input")
    if spec["interpolation"] not in INTERPOLATIONS:
        raise ExportError(f"preprocessing interpolation {spec['interpolation']!r} is not accepted; accepted: "
                          f"{', '.join(INTERPOLATIONS)}")
    if int(spec["channels"]) != channels:
        raise ExportError(f"preprocessing channels={spec['channels']} does not match the model's {channels} "
                          f"input channels; accepted: {channels}")
    for key in ("mean", "std"):
        values = [float(v) for v in np.ravel(spec[key])]
        if len(values) == 1:
            values = values * channels
        if len(values) != channels or (key == "std" and min(values) <= 0):
            raise ExportError(f"preprocessing {key}={spec[key]!r} is not accepted; accepted: {channels} "
                              f"{'positive ' if key == 'std' else ''}values (or one)")
        spec[key] = values
    spec["resize"] = [int(v) for v in spec["resize"]]
    spec["channels"], spec["scale"], spec["round"] = int(spec["channels"]), float(spec["scale"]), bool(spec["round"])
    return spec


def preprocess(images, spec):
    """Turn uint8 images of any size into the model's normalized float32 input, as `spec` describes."""
    import tensorflow as tf

    x = tf.image.resize(tf.cast(images, tf.float32), spec["resize"], method=spec["interpolation"])
    if spec["round"]:
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    x = x * spec["scale"]
    mean = tf.constant(spec["mean"], tf.float32)
    std = tf.constant(spec["std"], tf.float32)
    return (x - mean) / std


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
        # Mixed-precision models compute in float16; every runtime is compared in float32.
        return {name: tf.cast(y, tf.float32) for name, y in zip(output_names, flat)}

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
