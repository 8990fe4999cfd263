"""OverFeat (Sermanet et al., ICLR 2014): one window classifier slid over an image pyramid as a convolution.

The classifier reads a `window` x `window` crop: the backbone's convolutional trunk, then two fully connected
layers and a last one giving, per window, 4 box deltas (relative to the window, boxes.encode) and K + 1 class
logits (index 0 is background). Its fully connected layers are built as convolutions (the first one's kernel
covers the trunk's map of one window, the others are 1x1), so the same weights classify one crop or every
window of a larger image in one pass: `convforge.convolutionalize` of `window_classifier(model)` is exactly
this head's map. The image is resized by each of `scales` (to whole window steps: window + k * stride pixels),
every scale's map gives one window per position (position (i, j) is the crop at (i * stride, j * stride) of
that scale's image), and the windows of all scales, decoded and put through NMS, are the detections.

Training is dense, on whole images (the windows one would sample as crops, without recomputing what
overlapping windows share): every window of every scale is matched to the objects (boxes.match: IoU >=
positive_iou learns the object's class and box, under negative_iou is background, each object's best window
always learns it); softmax cross-entropy with hard negative mining (3 per positive) and smooth L1 on the
deltas, over the positive count (SSD's multibox recipe, with windows for anchors).

Exactness needs a trunk without padding (every conv and pool 'valid'): the map at a position is then the crop's
own, bit for bit up to float rounding; a padded trunk is refused. `naive_class_maps` is the loop OverFeat
replaces (every window cropped from every scale and classified on its own), for the tests and the benchmark.

The raw output is one tensor (B, A, 4 + K + 1) in the RawDetections layer (head "overfeat"), windows in the
order of `windows_of(spec)`: scale, row, column. The spec: image_size, channels, window, stride, num_classes and
per scale its factor, resized size and grid of windows.
"""
import keras
import numpy as np
from keras import layers, ops

from convforge import boxes
from convforge.errors import ModelError
from convforge.layers.detections import BoxDecoder, RawDetections, raw_detections_layer
from convforge.heads.single_shot import MultiboxLoss
from convforge.layers.nms import NonMaxSuppression

HEAD = "overfeat"
TRUNK = "overfeat_trunk"
FC_LAYERS = ("overfeat_fc1", "overfeat_fc2", "overfeat_predict")
_MAX_LOG_SCALE = float(np.log(1000.0 / 16))


# ---- the backbone's trunk as a model of its own --------------------------------------------------------------

def source_input(tensor):
    """The model input a feature map is computed from (the image its backbone reads)."""
    while True:
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        if node.is_input:
            return tensor
        tensor = node.input_tensors[0]


def trunk_model(feature, input_shape, name):
    """The backbone's layers from its image to `feature`, as a model of their own on `input_shape` (None sides
    take any size); it shares their weights, so calling it on crops or on resized images reuses one trunk."""
    graph = keras.Model(source_input(feature), feature)
    inputs = keras.Input(tuple(input_shape), name=f"{name}_image")
    return keras.Model(inputs, graph._run_through_graph(inputs), name=name)


def _layers_of(model):
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers_of(layer)
        else:
            yield layer


def trunk_stride(trunk):
    """The trunk's total stride in pixels; raises ModelError when a layer pads (windows would not be exact)."""
    stride = 1
    for layer in _layers_of(trunk):
        padding = getattr(layer, "padding", None)
        size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None) or (1, 1)
        padded = (isinstance(layer, layers.ZeroPadding2D) and any(any(p) for p in layer.padding)) or (
            padding == "same" and max(size) > 1)
        if padded:
            raise ModelError(f"the overfeat head slides its window classifier exactly only over a backbone without "
                             f"padding, and layer {layer.name!r} pads its input; accepted: a backbone whose convs and "
                             f"pools are all 'valid' (e.g. alexnet_original with padding 0 in every convs row)")
        strides = getattr(layer, "strides", None)
        if strides is not None:
            if len(set(strides)) != 1:
                raise ModelError(f"layer {layer.name!r} strides {strides}; the overfeat head needs equal strides")
            stride *= int(strides[0])
    return stride


# ---- the head -----------------------------------------------------------------------------------------------

def pyramid(image_size, window, stride, scales):
    """Each scale's resized (height, width), rounded to window + k * stride pixels, and its grid of windows;
    scales whose image would be smaller than one window are left out."""
    out = []
    for scale in scales:
        size, grid = [], []
        for side in image_size:
            steps = int(round((side * scale - window) / stride))
            size.append(window + stride * steps)
            grid.append(steps + 1)
        if min(grid) >= 1 and not any(o["size"] == size for o in out):
            out.append({"scale": float(scale), "size": size, "grid": grid})
    return out


def overfeat_head(features, num_classes, level, window, scales, fc_units, head_dtype=None):
    """The raw per-window predictions (B, A, 4 + num_classes + 1) over the image pyramid."""
    feature = features[level]
    image = source_input(feature)
    channels = int(image.shape[-1])
    image_size = [int(v) for v in image.shape[1:3]]
    trunk = trunk_model(feature, (None, None, channels), TRUNK)
    stride = trunk_stride(trunk)
    one_window = trunk.compute_output_shape((None, window, window, channels))
    if min(one_window[1:3]) < 1:
        raise ModelError(f"a {window}-pixel window leaves the trunk no map; accepted: a larger head window")
    levels = pyramid(image_size, window, stride, scales)
    if not levels:
        raise ModelError(f"no scale of {list(scales)} fits a {window}-pixel window into a {image_size} image; "
                         f"accepted: scales whose resized image holds at least one window")
    spec = {"image_size": image_size, "channels": channels, "window": int(window), "stride": int(stride),
            "num_classes": int(num_classes), "scales": levels}
    fc = [layers.Conv2D(fc_units, tuple(one_window[1:3]), activation="relu", name=FC_LAYERS[0]),
          layers.Conv2D(fc_units, 1, activation="relu", name=FC_LAYERS[1]),
          layers.Conv2D(5 + num_classes, 1, dtype=head_dtype, name=FC_LAYERS[2])]
    outputs = []
    for entry in levels:
        height, width = entry["size"]
        x = image if [height, width] == image_size else layers.Resizing(
            height, width, interpolation="bilinear", name=f"overfeat_pyramid_{height}x{width}")(image)
        x = trunk(x)
        for layer in fc:
            x = layer(x)
        if list(x.shape[1:3]) != entry["grid"]:
            raise ModelError(f"the trunk gives a {list(x.shape[1:3])} map on a {entry['size']} image where "
                             f"{entry['grid']} windows were expected")
        outputs.append(layers.Reshape((int(np.prod(entry["grid"])), 5 + num_classes),
                                      name=f"overfeat_windows_{height}x{width}")(x))
    return RawDetections(HEAD, spec, axis=1, dtype=head_dtype)(outputs)


def windows_of(spec):
    """Every window of the pyramid as normalized yxyx boxes (A, 4) float32, in the raw output's order."""
    out = []
    for entry in spec["scales"]:
        (height, width), (rows, cols) = entry["size"], entry["grid"]
        top, left = np.meshgrid(np.arange(rows) * spec["stride"], np.arange(cols) * spec["stride"], indexing="ij")
        corners = np.stack([top, left, top + spec["window"], left + spec["window"]], -1).reshape(-1, 4)
        out.append(corners / np.array([height, width, height, width]))
    return np.concatenate(out).astype(np.float32)



@keras.saving.register_keras_serializable(package="convforge")
class WindowLoss(MultiboxLoss):
    """The dense window loss: SSD's multibox loss (matching, hard negatives, smooth L1 on deltas) with the
    pyramid's windows as its priors."""

    def __init__(self, spec, num_classes, positive_iou=0.5, negative_iou=0.4, negative_ratio=3.0, box_weight=1.0,
                 name="overfeat", **kwargs):
        super().__init__(spec, num_classes, positive_iou, negative_iou, negative_ratio, box_weight, name=name,
                         **kwargs)

    @staticmethod
    def priors(spec):
        """Every window of every pyramid level, in the raw output's order."""
        return windows_of(spec)


@keras.saving.register_keras_serializable(package="convforge")
class DecodeWindows(BoxDecoder):
    """Raw predictions (B, A, 4 + K + 1) -> (boxes (B, A, 4) decoded from the windows and clipped to the image,
    class probabilities (B, A, K) without the background)."""

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.windows = windows_of(spec)

    def call(self, raw):
        raw = ops.cast(raw, "float32")
        # An untrained regressor's size deltas are bounded so exp() cannot overflow (Detectron's log(1000 / 16)).
        deltas = ops.concatenate([raw[..., :2], ops.minimum(raw[..., 2:4], _MAX_LOG_SCALE / boxes.VARIANCES[2])], -1)
        decoded = ops.clip(boxes.decode(self.windows, deltas), 0.0, 1.0)
        return decoded, ops.softmax(raw[..., 4:], axis=-1)[..., 1:]


# ---- the classifier it slides, and the loop it replaces -------------------------------------------------------

def spec_of(model):
    """The pyramid spec of an OverFeat model (training or inference)."""
    layer = raw_detections_layer(model)
    if layer is None or layer.head != HEAD:
        raise ModelError(f"model {model.name!r} has no overfeat head; build it with head: {{name: overfeat}}")
    return layer.spec


def window_classifier(model):
    """The window classifier an OverFeat model slides, as a plain classifier: (B, window, window, C) -> (B, 4 +
    K + 1) raw [deltas, logits], its fully connected layers Dense (Flatten, then the convolutions' kernels
    reshaped: the same weights). `convforge.convolutionalize` of it gives back the head's map."""
    spec = spec_of(model)
    inputs = keras.Input((spec["window"], spec["window"], spec["channels"]), name="window")
    x = layers.Flatten(name="flatten")(model.get_layer(TRUNK)(inputs))
    for name in FC_LAYERS:
        conv = model.get_layer(name)
        kernel, *bias = conv.get_weights()
        dense = layers.Dense(conv.filters, activation=conv.activation, dtype=conv.dtype_policy,
                             name=name.replace("overfeat_", ""))
        dense.build((None, int(np.prod(kernel.shape[:3]))))
        # Flatten reads (row, column, channel) in the order a conv kernel stores its taps.
        dense.set_weights([kernel.reshape(-1, conv.filters), *bias])
        x = dense(x)
    return keras.Model(inputs, x, name=f"{model.name}_window_classifier")


def pyramid_images(model, images):
    """The batch resized to each scale of the pyramid, with the model's own resizing layers: [(B, h, w, C)]."""
    spec = spec_of(model)
    out = []
    for entry in spec["scales"]:
        height, width = entry["size"]
        if [height, width] == spec["image_size"]:
            out.append(np.asarray(images, np.float32))
        else:
            out.append(np.asarray(model.get_layer(f"overfeat_pyramid_{height}x{width}")(images)))
    return out


def naive_class_maps(model, images, classifier=None, batch_size=None):
    """The sliding-window loop OverFeat replaces: every window of every scale cropped and classified on its own
    by the window classifier (`classifier`: window_classifier(model), passed in to reuse its compiled predict).
    Returns per scale (B, rows, cols, 4 + K + 1), what the head computes in one pass. batch_size: windows per
    classifier call (None: all of a scale's windows of one image at once)."""
    spec = spec_of(model)
    classifier = classifier or window_classifier(model)
    window, stride = spec["window"], spec["stride"]
    maps = []
    for entry, scaled in zip(spec["scales"], pyramid_images(model, images)):
        rows, cols = entry["grid"]
        per_image = []
        for image in scaled:
            crops = np.stack([image[i * stride:i * stride + window, j * stride:j * stride + window]
                              for i in range(rows) for j in range(cols)])
            step = batch_size or len(crops)
            scores = [np.asarray(classifier.predict_on_batch(crops[k:k + step])) for k in range(0, len(crops), step)]
            per_image.append(np.concatenate(scores).reshape(rows, cols, -1))
        maps.append(np.stack(per_image))
    return maps


def class_maps(raw, spec):
    """The head's raw output (B, A, D) split into its scales' maps [(B, rows, cols, D)]."""
    raw = np.asarray(raw)
    maps, start = [], 0
    for entry in spec["scales"]:
        rows, cols = entry["grid"]
        maps.append(raw[:, start:start + rows * cols].reshape(len(raw), rows, cols, -1))
        start += rows * cols
    return maps


def detection_tail(model):
    """An OverFeat inference model's decoding and NMS alone, as a model from raw predictions (B, A, 4 + K + 1)
    to the four detection outputs (its own layers, so the same detections)."""
    raw = keras.Input(model.get_layer("decode").input.shape[1:], name="raw")
    out = model.get_layer("detections")(*model.get_layer("decode")(raw))
    return keras.Model(raw, out, name=f"{model.name}_tail")


def naive_detect(model, images, classifier=None, tail=None, batch_size=None):
    """Detections of an OverFeat inference model computed the naive way (naive_class_maps, then the model's own
    decoding and NMS, `tail`: detection_tail(model)): the same outputs as model(images), one crop at a time."""
    maps = naive_class_maps(model, images, classifier, batch_size)
    raw = np.concatenate([m.reshape(len(m), -1, m.shape[-1]) for m in maps], axis=1)
    out = (tail or detection_tail(model)).predict_on_batch(raw)
    return {k: np.asarray(v) for k, v in out.items()}


# The head interface tasks/detection.py calls.

def build(features, num_classes, spec, options, dtype=None):
    """The OverFeat head's raw per-window predictions over the image pyramid (spec: replaced by the pyramid's)."""
    return overfeat_head(features, num_classes, options.levels[-1], options.window, options.scales,
                         options.fc_units, dtype)


def loss(spec, num_classes, options):
    """The dense window loss with the recipe's matching and mining settings."""
    return WindowLoss(spec, num_classes, options.positive_iou, options.negative_iou, options.negative_ratio,
                      options.box_loss_weight)


def outputs(raw, spec, options):
    """Decoding and NMS over the windows of every scale: the inference outputs."""
    decoded, scores = DecodeWindows(spec, name="decode")(raw)
    return NonMaxSuppression(options.max_detections, options.nms_iou, options.score_threshold,
                             name="detections")(decoded, scores)
