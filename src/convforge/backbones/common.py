"""What every backbone shares: named feature levels, global pooling of features, precision and input checks."""
import contextlib

import keras
from keras import layers

from convforge.errors import ModelError, close_matches

POLICIES = ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
POOLINGS = (None, "avg", "max")


def level(x, name):
    """Name x as a feature level ('C2' is stride 4, ... 'C5' stride 32) that heads can attach to."""
    return layers.Identity(name=name)(x)


def feature_levels(model):
    """Return {level name: output tensor} of a backbone's named levels C1..C5, shallowest first."""
    found = {}
    for layer in model.layers:
        if layer.name[:1] == "C" and layer.name[1:].isdigit() and isinstance(layer, layers.Identity):
            found[layer.name] = layer.output
        elif isinstance(layer, keras.Model):
            found.update(feature_levels(layer))
    return dict(sorted(found.items(), key=lambda kv: int(kv[0][1:])))


def level_strides(model):
    """Return {level name: stride in input pixels}, the jump of each level's receptive field (exact at any size)."""
    from convforge.convmath import receptive_fields

    fields = receptive_fields(model)
    return {name: fields[name].jump[0] for name in feature_levels(model)}


def pool_features(x, pooling):
    """Global-pool features for include_top=False: None keeps the map, 'avg'/'max' give a vector."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


@contextlib.contextmanager
def precision(policy):
    """Build layers under a Keras dtype policy (e.g. 'mixed_bfloat16'), restoring the global one after."""
    if policy is None:
        yield
        return
    if policy not in POLICIES:
        raise ModelError(f"dtype {policy!r} is not a precision policy{close_matches(policy, POLICIES)}; "
                         f"accepted: {', '.join(POLICIES)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_input_shape(spec, input_shape):
    """Return input_shape as a (H, W, C) tuple of ints, or raise ModelError saying what the model accepts."""
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"{spec.name}: input_shape {input_shape!r} is not (height, width, channels) "
                         "with positive integers, e.g. (224, 224, 3)")
    if min(shape[:2]) < spec.min_input_size:
        raise ModelError(
            f"{spec.name}: input {shape[0]}x{shape[1]} is too small; this architecture accepts inputs of at "
            f"least {spec.min_input_size}x{spec.min_input_size} pixels (default {spec.default_input_shape[:2]})"
        )
    return shape


def check_options(spec, options, pooling=None):
    """Raise ModelError for options the architecture (backbone or classification top) does not take."""
    accepted = spec.option_names
    for key in options:
        if key not in accepted:
            raise ModelError(f"{spec.name} takes no option {key!r}{close_matches(key, accepted)}; "
                             f"accepted: {', '.join(accepted)}")
    if pooling not in POOLINGS:
        raise ModelError(f"{spec.name}: pooling {pooling!r} is not one of None, 'avg', 'max'")
