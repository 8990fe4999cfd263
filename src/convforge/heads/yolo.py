"""YOLO-style single-shot detection (Redmon et al., YOLOv2/v3, with YOLOv5's bounded box parametrization): a grid
per feature level whose every cell and anchor shape predicts a box, an objectness and per-class scores.

The raw head output is one tensor (B, A, 4 + 1 + K): per anchor (layers.anchors order: level, row, column,
shape) its box parameters (ty, tx, th, tw), an objectness logit and K class logits. A box is decoded around its
cell: centre = cell centre + (2 sigmoid(t) - 1) strides (so it reaches the neighbouring cells' objects) and
size = anchor size * (2 sigmoid(t))^2 (at most 4x the anchor), which keeps early training from exploding as
YOLOv3's exp() could. Scores are sigmoid(objectness) * sigmoid(class logit), one independent sigmoid per class.

Assignment (in the loss, on the padded ground truth): an object is learned by every anchor whose cell centre
lies within one stride of the object's centre (up to 4 cells) and whose shape is within `match_ratio` of the
object's in height and width, and always by its best-fitting shape; an anchor claimed by several objects takes
the one whose shape fits it best. Anchors whose predicted box already overlaps an object by `ignore_iou` are
left out of the no-object loss (YOLOv3's rule), so good duplicates are not punished.
"""
import keras
from keras import layers, ops

from convforge import boxes
from convforge.layers.anchors import anchor_strides, anchors_of, anchors_per_cell
from convforge.layers.detections import BoxDecoder, RawDetections
from convforge.layers.nms import NonMaxSuppression

HEAD = "yolo"


def yolo_head(features, num_classes, spec, channels=64, head_dtype=None):
    """The raw predictions (B, A, 5 + num_classes) from {level: feature map} (the levels of spec, in order)."""
    per_cell = anchors_per_cell(spec["scales"], spec["aspect_ratios"])
    outputs = []
    for level in spec["strides"]:
        x = features[level]
        height, width = x.shape[1:3]
        for i in range(2):
            x = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"yolo_{level}_conv{i + 1}")(x)
        # Objectness starts near the share of anchors holding objects (YOLOv5's prior), so the first steps are not
        # spent learning that almost everything is background.
        x = layers.Conv2D(per_cell * (5 + num_classes), 1, name=f"yolo_{level}_predict",
                          bias_initializer=_objectness_prior(per_cell, num_classes))(x)
        outputs.append(layers.Reshape((height * width * per_cell, 5 + num_classes), name=f"yolo_{level}_flat")(x))
    count = sum(t.shape[1] for t in outputs)
    expected = len(anchors_of(spec))
    if count != expected:
        raise ValueError(f"the feature maps hold {count} anchor positions but the anchor grid {expected}; "
                         f"the levels' strides {spec['strides']} do not fit input {spec['image_size']}")
    return RawDetections(HEAD, spec, axis=1, dtype=head_dtype)(outputs)


def _objectness_prior(per_cell, num_classes, objectness=-4.6, classes=-2.0):
    """Bias initializer: zero box parameters, objectness logit ~ log(0.01) and class logits ~ sigmoid 0.12."""
    import numpy as np

    bias = np.zeros((per_cell, 5 + num_classes), "float32")
    bias[:, 4], bias[:, 5:] = objectness, classes
    return keras.initializers.Constant(bias.reshape(-1))


def decode(anchors, strides, raw):
    """Predicted boxes (..., A, 4) yxyx from raw box parameters, around their anchors' cells."""
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    size = anchors[:, 2:] - anchors[:, :2]
    t = ops.sigmoid(raw[..., :4])
    yx = centre + (2.0 * t[..., :2] - 1.0) * strides
    hw = size * ops.square(2.0 * t[..., 2:])
    return ops.concatenate([yx - hw / 2, yx + hw / 2], axis=-1)


def assign(anchors, strides, gt_boxes, valid, match_ratio=4.0):
    """Which object each anchor learns: (index (B, A) int32, positive (B, A) bool); see the module docstring."""
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    size = anchors[:, 2:] - anchors[:, :2]
    gt_centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, M, 2)
    gt_size = ops.maximum(gt_boxes[..., 2:] - gt_boxes[..., :2], 1e-6)
    near = ops.all(ops.abs(gt_centre[:, :, None, :] - centre) < strides, axis=-1)  # (B, M, A)
    ratio = gt_size[:, :, None, :] / size
    fits = ops.max(ops.maximum(ratio, 1.0 / ratio), axis=-1) < match_ratio
    # Shape IoU: both boxes centred at one point, so only their sizes count.
    inter = ops.prod(ops.minimum(gt_size[:, :, None, :], size), axis=-1)
    shape_iou = inter / (ops.prod(gt_size, axis=-1)[..., None] + ops.prod(size, axis=-1) - inter)
    candidate = ops.logical_and(near, valid[..., None])
    # (B, M): each object's best nearby anchor
    best = ops.cast(ops.argmax(ops.where(candidate, shape_iou, -1.0), axis=-1), "int32")
    is_best = ops.arange(ops.shape(anchors)[0], dtype="int32")[None, None, :] == best[..., None]
    chosen = ops.logical_and(candidate, ops.logical_or(fits, is_best))
    score = ops.where(chosen, shape_iou, -1.0)
    return ops.cast(ops.argmax(score, axis=1), "int32"), ops.any(chosen, axis=1)


def _bce(logits, target, gamma=0.0):
    """Binary cross-entropy on logits, elementwise; gamma > 0 makes it the focal loss (Lin et al., 2017)."""
    loss = ops.softplus(logits) - logits * target
    if gamma:
        p = ops.sigmoid(logits)
        loss = loss * ops.power(ops.abs(target - p), gamma)
    return loss


@keras.saving.register_keras_serializable(package="convforge")
class YoloLoss(keras.losses.Loss):
    """YOLO's loss on raw predictions against padded ground truth y_true (B, M, 6): [ymin, xmin, ymax, xmax,
    class, valid]: GIoU loss of positive anchors' decoded boxes, objectness BCE (focal with gamma > 0) over
    positives and unignored negatives, per-class BCE of positives; weighted, summed, over the positive count."""

    def __init__(self, spec, num_classes, match_ratio=4.0, ignore_iou=0.5, box_weight=2.0, objectness_weight=1.0,
                 class_weight=1.0, focal_gamma=0.0, name="yolo", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec, self.num_classes = spec, int(num_classes)
        self.match_ratio, self.ignore_iou = float(match_ratio), float(ignore_iou)
        self.box_weight, self.objectness_weight = float(box_weight), float(objectness_weight)
        self.class_weight, self.focal_gamma = float(class_weight), float(focal_gamma)
        self.anchors, self.strides = anchors_of(spec), anchor_strides(spec)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        gt_boxes, gt_classes, valid = y_true[..., :4], y_true[..., 4], y_true[..., 5] > 0.5
        index, positive = assign(self.anchors, self.strides, gt_boxes, valid, self.match_ratio)
        predicted = decode(self.anchors, self.strides, y_pred)
        matched = ops.take_along_axis(gt_boxes, index[..., None], axis=1)
        box_loss = 1.0 - boxes.generalized_iou(predicted, matched)
        overlap = ops.where(valid[:, None, :], boxes.pairwise_iou(ops.stop_gradient(predicted), gt_boxes), 0.0)
        ignored = ops.logical_and(ops.logical_not(positive), ops.max(overlap, axis=-1) > self.ignore_iou)
        pos = ops.cast(positive, "float32")
        objectness = _bce(y_pred[..., 4], pos, self.focal_gamma) * (1.0 - ops.cast(ignored, "float32"))
        target_class = ops.one_hot(ops.cast(ops.take_along_axis(gt_classes, index, axis=1), "int32"),
                                   self.num_classes)
        class_loss = ops.sum(_bce(y_pred[..., 5:], target_class), axis=-1)
        total = (self.box_weight * ops.sum(box_loss * pos, axis=-1) + self.class_weight *
                 ops.sum(class_loss * pos, axis=-1) + self.objectness_weight * ops.sum(objectness, axis=-1))
        return total / ops.maximum(ops.sum(pos, axis=-1), 1.0)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec, "num_classes": self.num_classes,
                "match_ratio": self.match_ratio, "ignore_iou": self.ignore_iou, "box_weight": self.box_weight,
                "objectness_weight": self.objectness_weight, "class_weight": self.class_weight,
                "focal_gamma": self.focal_gamma}


@keras.saving.register_keras_serializable(package="convforge")
class DecodeYolo(BoxDecoder):
    """Raw predictions (B, A, 5 + K) -> (boxes (B, A, 4) clipped to the image, scores (B, A, K) =
    sigmoid(objectness) * sigmoid(class))."""

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.anchors, self.strides = anchors_of(spec), anchor_strides(spec)

    def call(self, raw):
        raw = ops.cast(raw, "float32")
        decoded = ops.clip(decode(self.anchors, self.strides, raw), 0.0, 1.0)
        return decoded, ops.sigmoid(raw[..., 4:5]) * ops.sigmoid(raw[..., 5:])


# The head interface tasks/detection.py calls (every detector module has these three).

def build(features, num_classes, spec, options, dtype=None):
    """The YOLO head's raw predictions on the backbone's levels."""
    return yolo_head(features, num_classes, spec, options.channels, dtype)


def loss(spec, num_classes, options):
    """The YOLO loss with the recipe's assignment and weighting settings."""
    return YoloLoss(spec, num_classes, options.match_ratio, options.ignore_iou, options.box_loss_weight,
                    options.objectness_weight, options.class_weight, options.focal_gamma)


def outputs(raw, spec, options):
    """Decoding and NMS: the inference outputs."""
    decoded, scores = DecodeYolo(spec, name="decode")(raw)
    return NonMaxSuppression(options.max_detections, options.nms_iou, options.score_threshold,
                             name="detections")(decoded, scores)
