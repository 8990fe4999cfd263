"""What an attack aims at, seen from the pixel scale it perturbs in.

A white-box target is a Keras classifier wrapped so that its logits are a differentiable function of images in
the `clip` range (0..1 by default) at the model's input size: the preprocessing contract saved with a convforge
model (pixels * scale - mean) / std is one per-channel affine map, applied inside, so eps means grey levels
whatever the model's normalization. Where the model ends in a softmax the logits are read before it (its own
variables, so a model being trained is attacked as it is now). A black-box target is any callable from a numpy
batch to class probabilities: `artifact_predictor` wraps an exported SavedModel, TFLite or ONNX file.
"""
import dataclasses
import json
import os
import pathlib

import numpy as np

from convforge.errors import ConvforgeError

BATCH = 256  # examples per graph call: bounds memory on large attacks, one trace for every batch


@dataclasses.dataclass
class AttackResult:
    """What an attack produced, per example: the adversarial images (same shape and dtype as x), whether each
    one succeeded, the model calls it cost (gradient calls for white-box attacks) and its perturbation's size."""

    x_adv: np.ndarray
    success: np.ndarray
    queries: np.ndarray
    norm: np.ndarray
    attack: str = ""
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def success_rate(self):
        """The fraction of examples the attack succeeded on."""
        return float(np.mean(self.success)) if len(self.success) else 0.0


def check_clip(clip):
    """(lo, hi) floats of a clip range, or ConvforgeError naming it."""
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ConvforgeError(f"clip={clip!r} is not accepted; accepted: a (low, high) pair such as (0.0, 1.0)") \
            from None
    if not hi > lo:
        raise ConvforgeError(f"clip={clip!r} is not accepted; accepted: low < high")
    return lo, hi


def affine(preprocessing, clip, channels):
    """(a, b) per channel with model input = a * x + b for images x in the clip range, from a contract (None: the
    model takes x as it is)."""
    if preprocessing is None:
        return np.ones(channels, np.float32), np.zeros(channels, np.float32)
    lo, hi = check_clip(clip)
    # x in [lo, hi] -> pixels 0..255 -> (pixels * scale - mean) / std
    pixels_per_unit = 255.0 / (hi - lo)
    std, mean = np.asarray(preprocessing["std"], np.float64), np.asarray(preprocessing["mean"], np.float64)
    a = pixels_per_unit * preprocessing["scale"] / std
    b = (-lo * pixels_per_unit * preprocessing["scale"] - mean) / std
    return a.astype(np.float32), b.astype(np.float32)


def _output_layer(model):
    """The layer that produces the model's (first) output."""
    return model.outputs[0]._keras_history[0]


def ends_in_softmax(model):
    """Whether the model's first output is a softmax (a Softmax or Activation layer, or a layer's own activation)."""
    import keras

    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(layer, "activation", None) is keras.activations.softmax


class WhiteBox:
    """A Keras classifier as an attack sees it: logits(x) and probabilities(x) of images x in the clip range.

    model: a keras.Model (its first output is the class scores) or a path (recipe, run folder, .keras), whose
    saved preprocessing contract is then used unless `preprocessing` is given. A keras.Model without
    `preprocessing` takes x as it is.
    """

    def __init__(self, model, clip=(0.0, 1.0), preprocessing=None):
        import keras

        self.lo, self.hi = check_clip(clip)
        if not isinstance(model, keras.Model):
            model, saved = load_classifier(model)
            preprocessing = preprocessing if preprocessing is not None else saved
        self.model = model
        shape = model.inputs[0].shape
        if len(shape) != 4 or None in shape[1:]:
            raise ConvforgeError(f"model {model.name!r} takes {tuple(shape)}; accepted: one image input "
                                 f"(batch, height, width, channels) of fixed size")
        self.shape = tuple(int(v) for v in shape[1:])
        self.num_classes = int(model.outputs[0].shape[-1])
        self.preprocessing = preprocessing
        self.a, self.b = affine(preprocessing, clip, self.shape[2])
        self.softmax = ends_in_softmax(model)
        layer = _output_layer(model)
        self._features = keras.Model(model.inputs, layer.input) if self.softmax else None
        self._head = layer

    def inputs(self, x):
        """The model input for images x in the clip range (a tensor)."""
        return x * self.a + self.b

    def pixels(self, model_input):
        """Images in the clip range for model inputs (numpy): the inverse of `inputs`."""
        return ((np.asarray(model_input, np.float32) - self.b) / self.a).astype(np.float32)

    def logits(self, x, training=False):
        """Class logits for images x in the clip range (differentiable; tensors in, float32 tensor out)."""
        import keras
        import tensorflow as tf

        h = self.inputs(tf.cast(x, tf.float32))
        if not self.softmax:
            return tf.cast(self.model(h, training=training)[0] if len(self.model.outputs) > 1
                           else self.model(h, training=training), tf.float32)
        features = self._features(h, training=training)
        if isinstance(self._head, keras.layers.Softmax):
            return tf.cast(features, tf.float32)
        # The head's own activation is softmax: run the same layer (same variables) with it switched off.
        activation = self._head.activation
        self._head.activation = keras.activations.linear
        try:
            return tf.cast(self._head(features), tf.float32)
        finally:
            self._head.activation = activation

    def check(self, x, y=None):
        """x as float32 (N, H, W, C) at the model's size inside the clip range, and y as int (N,), or raise."""
        x = check_images(x, (self.lo, self.hi), self.shape)
        return x, (None if y is None else check_labels(y, len(x), self.num_classes))

    def predict(self, x):
        """Class probabilities (numpy) of images x in the clip range: the black-box view of this model."""
        import tensorflow as tf

        if not hasattr(self, "_probabilities"):
            self._probabilities = tf.function(lambda images: tf.nn.softmax(self.logits(images)), reduce_retracing=True)
        x = np.asarray(x, np.float32)
        return np.concatenate([self._probabilities(tf.constant(x[i:i + BATCH])).numpy()
                               for i in range(0, len(x), BATCH)]) if len(x) else np.zeros((0, self.num_classes))


def check_images(x, clip, shape=None):
    """x as float32 (N, H, W, C) inside the clip range (and of `shape` (H, W, C) when given), or ConvforgeError."""
    lo, hi = check_clip(clip)
    x = np.asarray(x)
    if x.ndim != 4 or (shape is not None and tuple(x.shape[1:]) != tuple(shape)):
        wanted = f"(N, {', '.join(map(str, shape))}) images at the model's input size" if shape else \
            "(N, height, width, channels) images"
        raise ConvforgeError(f"x has shape {x.shape}; accepted: {wanted}")
    if x.size and (x.min() < lo - 1e-6 or x.max() > hi + 1e-6):
        raise ConvforgeError(f"x spans {x.min():.4g}..{x.max():.4g}, outside clip=({lo:g}, {hi:g}); accepted: "
                             f"images in the clip range (pass clip=(0, 255) for 0..255 pixels)")
    return x.astype(np.float32)


def dataset_pixels(dataset, target, limit=None):
    """(x, y) of a (model input, label) dataset: the images on the target's pixel scale (clipped to its range) and
    integer labels (one-hot rows decoded), up to `limit` examples."""
    xs, ys, seen = [], [], 0
    for x, y in dataset:
        y = np.asarray(y)
        xs.append(target.pixels(np.asarray(x)))
        ys.append(y.argmax(-1) if y.ndim == 2 else y)
        seen += len(y)
        if limit is not None and seen >= limit:
            break
    x = np.clip(np.concatenate(xs)[:limit], target.lo, target.hi).astype(np.float32)
    return x, np.concatenate(ys)[:limit].astype(np.int64)


def check_labels(y, n, num_classes):
    """Labels as int64 (n,) inside 0..num_classes-1, or ConvforgeError."""
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot
        y = y.argmax(-1)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise ConvforgeError(f"y has shape {y.shape}; accepted: {n} integer class ids (or one-hot rows)")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ConvforgeError(f"y holds class ids {y.min()}..{y.max()}; accepted: 0..{num_classes - 1}")
    return y


def white_box(model, clip=(0.0, 1.0), preprocessing=None):
    """A WhiteBox for a model (a WhiteBox is returned as it is when its clip range matches)."""
    if isinstance(model, WhiteBox):
        if (model.lo, model.hi) != check_clip(clip):
            raise ConvforgeError(f"the target was wrapped for clip=({model.lo:g}, {model.hi:g}), the attack asks "
                                 f"for clip={tuple(clip)}; accepted: one clip range")
        return model
    return WhiteBox(model, clip, preprocessing)


def load_classifier(source):
    """(float32 keras model, preprocessing contract or None) of a recipe, run folder or .keras file."""
    from convforge.modelfile import load_model
    from convforge.preprocessing import saved_beside
    from convforge.runs import find_run

    run = find_run(source)
    model = load_model(run.model_path, precision="float32")
    shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    contract, saved = saved_beside(run.model_path, shape)
    return model, contract if saved else None


def as_predict(target, clip=(0.0, 1.0)):
    """A numpy batch -> probabilities callable from a predict callable, a WhiteBox, a Keras model or an artifact
    path (.tflite, .onnx, a SavedModel folder)."""
    import keras

    if isinstance(target, WhiteBox):
        return target.predict
    if isinstance(target, keras.Model):
        return WhiteBox(target, clip).predict
    if isinstance(target, (str, os.PathLike)):
        return artifact_predictor(target, clip)
    if callable(target):
        return target
    raise ConvforgeError(f"target {target!r} is not accepted; accepted: a callable from a numpy batch to class "
                         f"probabilities, a Keras model, or an exported .tflite, .onnx or SavedModel path")


def _softmax(z):
    """Row-wise softmax of a float array."""
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def artifact_predictor(path, clip=(0.0, 1.0), threads=1):
    """predict(x) -> class probabilities for an exported artifact (.tflite, .onnx or a SavedModel folder) run in
    its own runtime, x in the clip range at the model's input size; the preprocessing in the export's card.json
    is applied first. Counts its calls (`.calls`) and the images it saw (`.images`)."""
    from convforge.export.verify import runner

    path = pathlib.Path(path)
    if path.is_dir() and (path / "saved_model.pb").exists():
        fmt, card_path = "saved_model", path.parent / "card.json"
    elif path.suffix == ".tflite":
        fmt, card_path = "tflite", path.parent / "card.json"
    elif path.suffix == ".onnx":
        fmt, card_path = "onnx", path.parent / "card.json"
    else:
        raise ConvforgeError(f"{str(path)!r} is not an exported model; accepted: a .tflite or .onnx file or a "
                             f"SavedModel folder (convforge export writes them)")
    if not path.exists():
        raise ConvforgeError(f"{str(path)!r} does not exist")
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.exists() else {}
    spec = card.get("input", {})
    if fmt == "saved_model" and spec.get("served_preprocessing"):
        raise ConvforgeError(f"{str(path)!r} serves uint8 images of any size (exported with preprocessing); "
                             f"accepted: the .tflite or .onnx artifact beside it, which take the model input")
    preprocessing = spec.get("preprocessing")
    run, _ = runner(fmt, path, threads)
    channels = int(spec["shape"][-1]) if spec.get("shape") else None
    a, b = affine(preprocessing, clip, channels) if preprocessing else (1.0, 0.0)

    def predict(x):
        """Class probabilities of images x in the clip range, from the artifact."""
        x = np.asarray(x, np.float32)
        predict.calls += 1
        predict.images += len(x)
        outputs = run(x * a + b)
        scores = outputs.get("probabilities", next(iter(outputs.values())))
        scores = np.asarray(scores, np.float32).reshape(len(x), -1)
        sums = scores.sum(-1)
        if scores.min() < 0 or np.abs(sums - 1).max() > 1e-2:
            scores = _softmax(scores)  # logits
        return scores

    predict.calls, predict.images = 0, 0
    predict.format = fmt
    return predict
