"""Which precision a model computes in, and its float32 copy for export, verification and serving.

A model trained under `mixed_bfloat16` or `mixed_float16` keeps float32 weights but computes every layer in
16 bits; saved as is, its graph is full of bf16/fp16 ops that TFLite builtins cannot hold and that a phone or
an AVX2 CPU runs slowly or not at all. Its float32 copy is the same architecture under the float32 policy with
the same weights: no retraining, and it differs from the trained model only by the rounding the 16-bit compute
added (~1e-2 on softmax outputs for bf16), which is judged by the task metric, not by the float32 tolerance.
"""
import numpy as np

from convforge.errors import ExportError

FLOAT32 = "float32"
# Policies that compute in 16 bits (the mixed ones keep float32 variables; the plain ones store 16-bit weights).
REDUCED = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def model_precision(model):
    """The precision policy a Keras model computes in: the reduced policy of its layers, else 'float32'."""
    counts = {}
    for layer in _all_layers(model):
        name = getattr(getattr(layer, "dtype_policy", None), "name", None)
        if name in REDUCED:
            counts[name] = counts.get(name, 0) + 1
    # A mixed model keeps a few layers (the classifier, its softmax) in float32 on purpose; it is still mixed.
    return max(counts, key=counts.get) if counts else FLOAT32


def _all_layers(model):
    """Every layer of a model, nested models and layers inside layers included."""
    seen, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        seen.append(layer)
        stack.extend(getattr(layer, "_layers", None) or [])
    return seen


def _to_float32(node):
    """A serialized Keras config with every reduced dtype policy and tensor dtype turned into float32."""
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and \
                (node.get("config") or {}).get("name") in REDUCED:
            return {**node, "config": {**node["config"], "name": FLOAT32}}
        return {key: FLOAT32 if key == "dtype" and isinstance(value, str) and value in REDUCED else _to_float32(value)
                for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_to_float32(value) for value in node)
    return node


def float32_copy(model):
    """The same model under the float32 policy with the same weights; `model` itself when it is float32 already.

    Works on any functional or sequential Keras model whose layers serialize (convforge's and Keras' own): the
    config is rewritten policy by policy and rebuilt with the float32 global policy in force, so a layer that
    makes sublayers without naming a dtype gets float32 too.
    """
    import keras

    if model_precision(model) == FLOAT32:
        return model
    # Custom convforge layers must be registered before their configs can be read back.
    import convforge.heads  # noqa: F401
    import convforge.layers  # noqa: F401

    config = _to_float32(keras.saving.serialize_keras_object(model))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(FLOAT32)
    try:
        copy = keras.saving.deserialize_keras_object(config)
    finally:
        keras.config.set_dtype_policy(previous)
    weights = model.get_weights()
    targets = copy.weights
    if len(weights) != len(targets) or any(tuple(w.shape) != tuple(t.shape) for w, t in zip(weights, targets)):
        raise ExportError(f"model {model.name!r}: its float32 copy does not have the same weights (the config of "
                          f"a layer does not rebuild it); accepted: a model whose layers serialize with get_config")
    # Mixed policies keep float32 variables (copied exactly); plain 16-bit ones widen to float32 losslessly.
    copy.set_weights([np.asarray(w).astype(t.dtype) for w, t in zip(weights, targets)])
    return copy
