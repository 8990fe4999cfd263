"""The raw output layer of a detection head: it joins the head's per-level predictions and carries the head's
name and anchor spec in the model's config, so a saved and reloaded model still knows how to decode itself."""
import keras
from keras import ops

LAYER_NAME = "raw_detections"


@keras.saving.register_keras_serializable(package="convforge")
class RawDetections(keras.layers.Layer):
    """Concatenate a head's prediction tensors on `axis` (one tensor passes through), remembering `head` (the
    detector's name) and `spec` (its anchors and sizes, plain JSON data)."""

    receptive_field_passthrough = True

    def __init__(self, head, spec, axis=-1, **kwargs):
        kwargs.setdefault("name", LAYER_NAME)
        super().__init__(**kwargs)
        self.head, self.spec, self.axis = str(head), spec, int(axis)

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=self.axis) if isinstance(inputs, (list, tuple)) else inputs

    def compute_output_spec(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            return keras.KerasTensor(inputs.shape, inputs.dtype)
        shape = list(inputs[0].shape)
        sizes = [t.shape[self.axis] for t in inputs]
        shape[self.axis] = None if None in sizes else sum(sizes)
        return keras.KerasTensor(tuple(shape), inputs[0].dtype)

    def get_config(self):
        return {**super().get_config(), "head": self.head, "spec": self.spec, "axis": self.axis}


def raw_detections_layer(model):
    """The RawDetections layer of a detector built by convforge, or None."""
    for layer in model.layers:
        if isinstance(layer, RawDetections):
            return layer
    return None


class BoxDecoder(keras.layers.Layer):
    """Base of the layers that turn a head's raw predictions (B, A, 5 + K) into (boxes (B, A, 4) normalized yxyx,
    per-class scores (B, A, K)) for NMS; a subclass implements `call` from its `spec` (saved in its config)."""

    receptive_field_passthrough = True

    def __init__(self, spec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec

    def compute_output_spec(self, raw):
        batch, count, width = raw.shape
        return (keras.KerasTensor((batch, count, 4), "float32"),
                keras.KerasTensor((batch, count, width - 5), "float32"))

    def get_config(self):
        return {**super().get_config(), "spec": self.spec}
