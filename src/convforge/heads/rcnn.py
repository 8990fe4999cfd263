"""R-CNN (Girshick et al., CVPR 2014): external region proposals, each warped to a fixed size and classified by a
CNN, with a class-specific box regression per proposal. Slow by design: the CNN runs once per proposal.

Proposals: selective search (convforge.proposals; Felzenszwalb segments grouped bottom-up), at most `proposals` per
image, computed in NumPy inside the model by the SelectiveSearch layer. Each proposal is grown by `context`
pixels of the warped frame on every side (the paper's 16 of 227) and warped, whatever its aspect ratio, to
`crop_size` x `crop_size` (bilinear sampling; outside the image the normalized value 0, the mean). The backbone's
trunk reads the crop, then two fully connected layers, K + 1 class logits (index 0 is background) and 4 box
deltas per class (boxes.encode relative to the proposal).

Training sees every proposal of the batch's images: a proposal whose best IoU with an object is >= positive_iou
learns that object's class, one under negative_iou is background (between: ignored); its box deltas learn the
object where the IoU is >= regress_iou (the paper's 0.6). The paper's mini-batch of 32 positives and 96
background windows becomes a weight: each image's background proposals together count at most
negative_ratio times its positives. Cross-entropy is averaged over those weights, smooth L1 over the regressed
proposals. A softmax classifier replaces the paper's per-class SVMs (its own appendix and Fast R-CNN found the
difference small). The `proposal_recall` metric is the share of objects some proposal overlaps by
positive_iou: what this detector can find at best.

The saved model (`model.keras`) is the whole detector: image in, SelectiveSearch, warping, CNN, per-class box
decoding and NonMaxSuppression, the four detection outputs out. `convforge evaluate` and `predict` load and call it
like any detector. The proposals are a Python callback (`tf.numpy_function`), so the model runs in TensorFlow
(Keras fit/predict/evaluate, a fresh process included) but has no graph export (SavedModel, TFLite and ONNX hold
no Python): export its CNN alone with `proposal_classifier(model)`.

The raw output is one tensor (B, P, 5 + K + 1 + 4 K) in the RawDetections layer (head "rcnn"): per proposal its
box (normalized yxyx), a valid flag (1, or 0 for padding), the K + 1 logits and the K x 4 deltas.
"""
import keras
import numpy as np
from keras import layers, ops

from convforge import boxes
from convforge.errors import ModelError
from convforge.heads.overfeat import source_input, trunk_model
from convforge.layers.detections import RawDetections, raw_detections_layer
from convforge.layers.nms import NonMaxSuppression
from convforge.proposals import SelectiveSearch

HEAD = "rcnn"
TRUNK = "rcnn_trunk"
# Decoded boxes grow at most this much over their proposal, so an untrained regressor cannot overflow exp().
_MAX_LOG_SCALE = float(np.log(1000.0 / 16))


@keras.saving.register_keras_serializable(package="convforge")
class WarpCrops(keras.layers.Layer):
    """(images (B, H, W, C), boxes (B, P, 4) normalized yxyx) -> crops (B * P, size, size, C): each box grown by
    `context` pixels of the crop on every side, then warped (bilinear, aspect ratio not kept) to size x size."""

    def __init__(self, size, context=0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.context = int(size), int(context)

    def call(self, images, proposals):
        import tensorflow as tf

        proposals = tf.cast(proposals, tf.float32)
        grow = self.size / (self.size - 2.0 * self.context)
        centre = (proposals[..., :2] + proposals[..., 2:]) / 2
        half = (proposals[..., 2:] - proposals[..., :2]) / 2 * grow
        edges = tf.reshape(tf.concat([centre - half, centre + half], -1), [-1, 4])
        # crop_and_resize samples `size` points from y1 * (H - 1) to y2 * (H - 1) (pixel centres); these
        # are the centres of a size x size grid laid over the box's edges.
        extent = tf.cast(tf.shape(images)[1:3], tf.float32)
        start = edges[:, :2] * extent + 0.5 * (edges[:, 2:] - edges[:, :2]) * extent / self.size - 0.5
        stop = edges[:, 2:] * extent - 0.5 * (edges[:, 2:] - edges[:, :2]) * extent / self.size - 0.5
        scale = tf.maximum(extent - 1.0, 1.0)
        sample = tf.concat([start / scale, stop / scale], -1)
        index = tf.repeat(tf.range(tf.shape(proposals)[0]), tf.shape(proposals)[1])
        crops = tf.image.crop_and_resize(tf.cast(images, tf.float32), sample, index, [self.size, self.size],
                                         extrapolation_value=0.0)
        return tf.cast(crops, self.compute_dtype)

    def compute_output_spec(self, images, proposals):
        count = None if proposals.shape[0] is None else proposals.shape[0] * proposals.shape[1]
        return keras.KerasTensor((count, self.size, self.size, images.shape[-1]), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "context": self.context}


@keras.saving.register_keras_serializable(package="convforge")
class PerImage(keras.layers.Layer):
    """(B * count, D) -> (B, count, D): the CNN's rows regrouped by the image their proposal came from."""

    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = int(count)

    def call(self, rows):
        return ops.reshape(rows, (-1, self.count, rows.shape[-1]))

    def compute_output_spec(self, rows):
        batch = None if rows.shape[0] is None else rows.shape[0] // self.count
        return keras.KerasTensor((batch, self.count, rows.shape[-1]), rows.dtype)

    def get_config(self):
        return {**super().get_config(), "count": self.count}


def rcnn_head(features, num_classes, level, options, head_dtype=None):
    """The raw per-proposal predictions (B, P, 5 + num_classes + 1 + 4 num_classes) of the image's proposals."""
    feature = features[level]
    image = source_input(feature)
    channels = int(image.shape[-1])
    size = options.crop_size
    if 2 * options.context >= size:
        raise ModelError(f"rcnn context {options.context} leaves no pixel of a {size}-pixel crop to the proposal; "
                         f"accepted: context < crop_size / 2")
    trunk = trunk_model(feature, (size, size, channels), TRUNK)
    if min(trunk.output.shape[1:3]) < 1:
        raise ModelError(f"a {size}-pixel crop leaves the trunk no map; accepted: a larger head crop_size")
    count = options.proposals
    # float32: proposals come from the image's own values, not a bfloat16 rounding of them.
    proposals, valid = SelectiveSearch(count, options.segment_scales, min_size=options.min_segment,
                                       dtype="float32", name="proposals")(image)
    x = trunk(WarpCrops(size, options.context, name="warp")(image, proposals))
    x = layers.Flatten(name="rcnn_flatten")(x)
    x = layers.Dense(options.fc_units, activation="relu", name="rcnn_fc1")(x)
    x = layers.Dense(options.fc_units, activation="relu", name="rcnn_fc2")(x)
    logits = layers.Dense(num_classes + 1, dtype=head_dtype, name="rcnn_class")(x)
    deltas = layers.Dense(4 * num_classes, dtype=head_dtype, name="rcnn_box",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))(x)
    rows = layers.Concatenate(dtype=head_dtype, name="rcnn_predictions")([logits, deltas])
    spec = {"image_size": [int(v) for v in image.shape[1:3]], "channels": channels, "num_classes": int(num_classes),
            "proposals": int(count), "crop_size": int(size), "context": int(options.context)}
    flags = layers.Reshape((count, 1), dtype="float32", name="proposal_valid")(valid)
    return RawDetections(HEAD, spec, axis=-1, dtype="float32")(
        [proposals, flags, PerImage(count, dtype=head_dtype, name="per_image")(rows)])


def _split(raw, num_classes):
    """A raw output's proposals (B, P, 4), valid flags (B, P) bool, logits (B, P, K + 1), deltas (B, P, K, 4)."""
    raw = ops.cast(raw, "float32")
    deltas = raw[..., 6 + num_classes:]
    deltas = ops.reshape(deltas, (ops.shape(raw)[0], ops.shape(raw)[1], num_classes, 4))
    return raw[..., :4], raw[..., 4] > 0.5, raw[..., 5:6 + num_classes], deltas



@keras.saving.register_keras_serializable(package="convforge")
class RCNNLoss(keras.losses.Loss):
    """R-CNN's loss on raw predictions against padded ground truth y_true (B, M, 6) [box, class, valid]: weighted
    cross-entropy of positive and background proposals, smooth L1 of the true class's deltas where the proposal
    overlaps its object by regress_iou (see the module docstring)."""

    def __init__(self, spec, num_classes, positive_iou=0.5, negative_iou=0.5, regress_iou=0.6, negative_ratio=3.0,
                 box_weight=1.0, name="rcnn", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec, self.num_classes = spec, int(num_classes)
        self.positive_iou, self.negative_iou, self.regress_iou = (float(positive_iou), float(negative_iou),
                                                                  float(regress_iou))
        self.negative_ratio, self.box_weight = float(negative_ratio), float(box_weight)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        gt_boxes, gt_classes, gt_valid = y_true[..., :4], y_true[..., 4], y_true[..., 5] > 0.5
        proposals, valid, logits, deltas = _split(y_pred, self.num_classes)
        iou = ops.where(gt_valid[:, None, :], boxes.pairwise_iou(proposals, gt_boxes), -1.0)  # (B, P, M)
        best, index = ops.max(iou, axis=-1), ops.cast(ops.argmax(iou, axis=-1), "int32")
        positive = ops.logical_and(valid, best >= self.positive_iou)
        negative = ops.logical_and(valid, best < self.negative_iou)
        classes = ops.cast(ops.take_along_axis(gt_classes, index, axis=1), "int32")
        target = ops.where(positive, classes + 1, 0)
        ce = keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)
        pos, neg = ops.cast(positive, "float32"), ops.cast(negative, "float32")
        count = ops.sum(pos, axis=-1, keepdims=True)
        share = ops.minimum(1.0, self.negative_ratio * ops.maximum(count, 1.0) /
                            ops.maximum(ops.sum(neg, axis=-1, keepdims=True), 1.0))
        weight = pos + share * neg
        class_loss = ops.sum(ce * weight, axis=-1) / ops.maximum(ops.sum(weight, axis=-1), 1e-6)
        regress = ops.logical_and(positive, best >= self.regress_iou)
        # Padding proposals and objects are zero boxes, whose encoding is log(0): replaced before encoding.
        unit = ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0])
        matched = ops.take_along_axis(gt_boxes, index[..., None], axis=1)
        target_deltas = boxes.encode(ops.where(regress[..., None], proposals, unit),
                                     ops.where(regress[..., None], matched, unit))
        own = ops.sum(deltas * ops.one_hot(ops.maximum(classes, 0), self.num_classes)[..., None], axis=2)
        error = ops.where(regress[..., None], own - target_deltas, 0.0)
        box_loss = ops.sum(ops.sum(boxes.smooth_l1(error), axis=-1), axis=-1) / ops.maximum(
            ops.sum(ops.cast(regress, "float32"), axis=-1), 1.0)
        return class_loss + self.box_weight * box_loss

    def get_config(self):
        return {**super().get_config(), "spec": self.spec, "num_classes": self.num_classes,
                "positive_iou": self.positive_iou, "negative_iou": self.negative_iou,
                "regress_iou": self.regress_iou, "negative_ratio": self.negative_ratio, "box_weight": self.box_weight}


@keras.saving.register_keras_serializable(package="convforge")
class ProposalRecall(keras.metrics.Metric):
    """The share of objects that some proposal overlaps by `iou` or more (the most R-CNN can find)."""

    def __init__(self, iou=0.5, name="proposal_recall", **kwargs):
        super().__init__(name=name, **kwargs)
        self.iou = float(iou)
        self.found = self.add_variable((), initializer="zeros", name="found")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        gt_valid = y_true[..., 5] > 0.5
        overlap = boxes.pairwise_iou(y_true[..., :4], y_pred[..., :4])  # (B, M, P)
        overlap = ops.where(y_pred[:, None, :, 4] > 0.5, overlap, 0.0)
        covered = ops.logical_and(gt_valid, ops.max(overlap, axis=-1) >= self.iou)
        self.found.assign_add(ops.sum(ops.cast(covered, "float32")))
        self.total.assign_add(ops.sum(ops.cast(gt_valid, "float32")))

    def result(self):
        return self.found / ops.maximum(self.total, 1.0)

    def get_config(self):
        return {**super().get_config(), "iou": self.iou}


@keras.saving.register_keras_serializable(package="convforge")
class DecodeProposals(keras.layers.Layer):
    """Raw predictions -> (boxes (B, P * K, 4): each proposal refined by each class's deltas, clipped to the
    image; scores (B, P * K, K): row p * K + k holds class k's probability in column k, zeros elsewhere), so
    NonMaxSuppression sees every class-specific box; padding proposals score 0."""

    receptive_field_passthrough = True

    def __init__(self, spec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.num_classes = int(spec["num_classes"])

    def call(self, raw):
        k = self.num_classes
        proposals, valid, logits, deltas = _split(raw, k)
        bound = _MAX_LOG_SCALE / boxes.VARIANCES[2]
        deltas = ops.concatenate([deltas[..., :2], ops.minimum(deltas[..., 2:], bound)], axis=-1)
        anchors = ops.broadcast_to(proposals[:, :, None, :], ops.shape(deltas))
        decoded = ops.clip(boxes.decode(anchors, deltas), 0.0, 1.0)
        probabilities = ops.softmax(logits, axis=-1)[..., 1:] * ops.cast(valid, "float32")[..., None]
        scores = probabilities[..., None] * ops.eye(k, dtype="float32")  # (B, P, K, K)
        count = ops.shape(raw)[1] * k
        return (ops.reshape(decoded, (ops.shape(raw)[0], count, 4)),
                ops.reshape(scores, (ops.shape(raw)[0], count, k)))

    def compute_output_spec(self, raw):
        batch, count = raw.shape[:2]
        k = self.num_classes
        total = None if count is None else count * k
        return keras.KerasTensor((batch, total, 4), "float32"), keras.KerasTensor((batch, total, k), "float32")

    def get_config(self):
        return {**super().get_config(), "spec": self.spec}


def proposal_classifier(model):
    """The CNN an R-CNN model runs on each warped proposal, alone: (B, crop, crop, C) -> (B, K + 1 + 4 K)
    [logits, deltas]; it holds no Python, so it exports like any classifier."""
    layer = raw_detections_layer(model)
    if layer is None or layer.head != HEAD:
        raise ModelError(f"model {model.name!r} has no rcnn head; build it with head: {{name: rcnn}}")
    spec = layer.spec
    inputs = keras.Input((spec["crop_size"], spec["crop_size"], spec["channels"]), name="crop")
    x = model.get_layer(TRUNK)(inputs)
    for name in ("rcnn_flatten", "rcnn_fc1", "rcnn_fc2"):
        x = model.get_layer(name)(x)
    out = model.get_layer("rcnn_predictions")([model.get_layer("rcnn_class")(x), model.get_layer("rcnn_box")(x)])
    return keras.Model(inputs, out, name=f"{model.name}_proposal_classifier")


# The head interface tasks/detection.py calls.

def build(features, num_classes, spec, options, dtype=None):
    """R-CNN's raw per-proposal predictions (spec: replaced by the head's own)."""
    return rcnn_head(features, num_classes, options.levels[-1], options, dtype)


def loss(spec, num_classes, options):
    """R-CNN's loss with the recipe's labelling and weighting settings."""
    return RCNNLoss(spec, num_classes, options.positive_iou, options.negative_iou, options.regress_iou,
                    options.negative_ratio, options.box_loss_weight)


def metrics(spec, num_classes, options):
    """The proposals' recall of the objects, at positive_iou."""
    return [ProposalRecall(options.positive_iou)]


def outputs(raw, spec, options):
    """Per-class box decoding and NMS: the inference outputs."""
    decoded, scores = DecodeProposals(spec, name="decode")(raw)
    return NonMaxSuppression(options.max_detections, options.nms_iou, options.score_threshold,
                             name="detections")(decoded, scores)
