"""Single-shot detection (SSD, Liu et al., ECCV 2016): anchors on several feature levels, each predicting class
scores and box deltas; trained with the multibox loss (matching, hard negative mining 3:1, smooth L1) and decoded
into final detections by NMS inside the model.

The raw head output is one tensor (B, A, 4 + K + 1): per anchor, its encoded box deltas then K + 1 class logits
(index 0 is background). Anchors follow `layers.anchors.anchor_grid`'s order (level, row, column, anchor shape),
which is the order the per-level maps flatten in, so anchor a and output a always belong together.
"""
import keras
from keras import layers, ops

from convforge import boxes
from convforge.layers.anchors import anchor_spec, anchors_of, anchors_per_cell  # noqa: F401  (re-exported)
from convforge.layers.detections import BoxDecoder, RawDetections
from convforge.layers.nms import NonMaxSuppression

HEAD = "ssd"


def ssd_head(features, num_classes, spec, channels=64, head_dtype=None):
    """The raw predictions (B, A, 4 + num_classes + 1) from {level: feature map} (the levels of spec, in order)."""
    per_cell = anchors_per_cell(spec["scales"], spec["aspect_ratios"])
    deltas, logits = [], []
    for level in spec["strides"]:
        x = features[level]
        height, width = x.shape[1:3]
        for i in range(2):
            x = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"ssd_{level}_conv{i + 1}")(x)
        box = layers.Conv2D(per_cell * 4, 3, padding="same", name=f"ssd_{level}_box")(x)
        cls = layers.Conv2D(per_cell * (num_classes + 1), 3, padding="same", name=f"ssd_{level}_class")(x)
        deltas.append(layers.Reshape((height * width * per_cell, 4), name=f"ssd_{level}_box_flat")(box))
        logits.append(layers.Reshape((height * width * per_cell, num_classes + 1),
                                     name=f"ssd_{level}_class_flat")(cls))
    count = sum(t.shape[1] for t in deltas)
    expected = len(anchors_of(spec))
    if count != expected:
        raise ValueError(f"the feature maps hold {count} anchor positions but the anchor grid {expected}; "
                         f"the levels' strides {spec['strides']} do not fit input {spec['image_size']}")
    joined = [layers.Concatenate(axis=1, name=name)(parts)
              for name, parts in (("box_deltas", deltas), ("class_logits", logits))]
    return RawDetections(HEAD, spec, dtype=head_dtype)(joined)


@keras.saving.register_keras_serializable(package="convforge")
class MultiboxLoss(keras.losses.Loss):
    """SSD's loss on raw predictions against padded ground truth y_true (B, M, 6): [ymin, xmin, ymax, xmax,
    class, valid]. Anchors are matched (boxes.match); every positive's class is learned by cross-entropy and its
    box by smooth L1 on the encoded deltas; the negatives kept are the hardest, negative_ratio per positive
    (hard negative mining); ignored anchors count for nothing. Normalized by the number of positives."""

    def __init__(self, spec, num_classes, positive_iou=0.5, negative_iou=0.4, negative_ratio=3.0,
                 box_weight=1.0, name="multibox", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec, self.num_classes = spec, int(num_classes)
        self.positive_iou, self.negative_iou = float(positive_iou), float(negative_iou)
        self.negative_ratio, self.box_weight = float(negative_ratio), float(box_weight)
        self.anchors = self.priors(spec)

    @staticmethod
    def priors(spec):
        """The boxes predictions are matched to and encoded against (SSD's anchors; OverFeat's windows)."""
        return anchors_of(spec)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        gt_boxes, gt_classes, valid = y_true[..., :4], y_true[..., 4], y_true[..., 5] > 0.5
        index, label = boxes.match(self.anchors, gt_boxes, valid, self.positive_iou, self.negative_iou)
        positive = ops.cast(label == 1, "float32")
        negative = label == 0
        matched = ops.take_along_axis(gt_boxes, index[..., None], axis=1)  # (B, A, 4)
        target_deltas = boxes.encode(self.anchors, matched)
        target_class = ops.where(label == 1, ops.cast(ops.take_along_axis(gt_classes, index, axis=1), "int32") + 1,
                                 0)
        ce = keras.losses.sparse_categorical_crossentropy(target_class, y_pred[..., 4:], from_logits=True)
        # Hard negative mining: rank negatives by their loss, keep negative_ratio per positive in each image.
        num_positive = ops.sum(positive, axis=-1, keepdims=True)
        negative_loss = ops.where(negative, ce, -1.0)
        rank = ops.argsort(ops.argsort(-negative_loss, axis=-1), axis=-1)
        keep_negative = ops.logical_and(negative, ops.cast(rank, "float32") <
                                        ops.maximum(self.negative_ratio * num_positive, 1.0))
        class_loss = ops.sum(ce * (positive + ops.cast(keep_negative, "float32")), axis=-1)
        box_loss = ops.sum(ops.sum(boxes.smooth_l1(y_pred[..., :4] - target_deltas), axis=-1) * positive, axis=-1)
        return (class_loss + self.box_weight * box_loss) / ops.maximum(num_positive[..., 0], 1.0)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec, "num_classes": self.num_classes,
                "positive_iou": self.positive_iou, "negative_iou": self.negative_iou,
                "negative_ratio": self.negative_ratio, "box_weight": self.box_weight}



@keras.saving.register_keras_serializable(package="convforge")
class DecodeDetections(BoxDecoder):
    """Raw predictions (B, A, 4 + K + 1) -> (boxes (B, A, 4) decoded from the anchors and clipped to the image,
    class probabilities (B, A, K) without the background)."""

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.anchors = anchors_of(spec)

    def call(self, raw):
        raw = ops.cast(raw, "float32")
        decoded = ops.clip(boxes.decode(self.anchors, raw[..., :4]), 0.0, 1.0)
        return decoded, ops.softmax(raw[..., 4:], axis=-1)[..., 1:]


def detector_outputs(raw, spec, max_detections=100, iou_threshold=0.5, score_threshold=0.05):
    """The inference outputs from raw predictions: {boxes, scores, classes, num_detections} after NMS."""
    decoded, scores = DecodeDetections(spec, name="decode")(raw)
    return NonMaxSuppression(max_detections, iou_threshold, score_threshold, name="detections")(decoded, scores)


# The head interface tasks/detection.py calls (every detector module has these three).

def build(features, num_classes, spec, options, dtype=None):
    """The SSD head's raw predictions on the backbone's levels."""
    return ssd_head(features, num_classes, spec, options.channels, dtype)


def loss(spec, num_classes, options):
    """The multibox loss with the recipe's matching and mining settings."""
    return MultiboxLoss(spec, num_classes, options.positive_iou, options.negative_iou, options.negative_ratio,
                        options.box_loss_weight)


def outputs(raw, spec, options):
    """Decoding and NMS: the inference outputs."""
    return detector_outputs(raw, spec, options.max_detections, options.nms_iou, options.score_threshold)
