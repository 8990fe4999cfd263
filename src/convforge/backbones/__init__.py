"""Architecture builders (Keras functional API), one file per family, each registered by name."""
import keras

from convforge.backbones.common import (check_input_shape, check_options, feature_levels, level_strides,
                                        pool_features, precision)
from convforge.errors import ModelError
from convforge.registry import get_spec


def build_backbone(name, input_shape=None, num_classes=None, include_top=True, pooling=None, dtype=None,
                   **options):
    """Build a registered architecture as a keras.Model: its backbone, and its classification top unless told not.

    The backbone comes from the family's builder; the top is heads.classification's kind named by the registry
    row (so `include_top=True` gives the published model, parameter for parameter). Options override the row's
    and go to whichever of the two takes them.

    Args:
        name: a registered name (see `convforge.list_models()`), e.g. "resnet50".
        input_shape: (height, width, channels); defaults to the architecture's own (224x224x3 for most).
        num_classes: size of the classifier when include_top is True (default: the published one).
        include_top: add the classification top; without it the model outputs the last feature level
            (the backbone's levels and strides: `convforge.registry.get_spec(name).feature_levels()`).
        pooling: with include_top=False, None (feature map), "avg" or "max" (a vector).
        dtype: a Keras precision policy ("mixed_bfloat16", ...); the classifier stays float32.
        **options: family options, e.g. se_ratio=16 on any ResNet, aux_logits=True on GoogLeNet.

    Examples:
        >>> model = build_backbone("resnet18", input_shape=(64, 64, 3), num_classes=10)
        >>> list(feature_levels(model))
        ['C1', 'C2', 'C3', 'C4', 'C5']
    """
    spec = get_spec(name)
    shape = check_input_shape(spec, input_shape or spec.default_input_shape)
    num_classes = spec.num_classes if num_classes is None else num_classes
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"{spec.name}: num_classes must be a positive integer, got {num_classes!r}")
    check_options(spec, options, pooling)
    backbone_options, top_options = spec.split_options(options)
    with precision(dtype):
        try:
            features = spec.builder(input_shape=shape, name=spec.name, **backbone_options)
        except ValueError as err:
            if isinstance(err, ModelError):
                raise
            # Keras reports a collapsed feature map deep inside a layer; say it in terms of the model.
            raise ModelError(f"{spec.name}: cannot build at input_shape {shape}: {err}".split("\n")[0]) from err
        if include_top:
            from convforge.heads.classification import classification_model

            return classification_model(features, spec.top, num_classes, aux_taps=spec.aux_taps, **top_options)
        if pooling:
            return keras.Model(features.input, pool_features(features.output, pooling), name=spec.name)
        return features


__all__ = ["build_backbone", "feature_levels", "level_strides"]
