"""Box operations every box head shares: formats, IoU and GIoU, anchor-relative encoding, anchor matching.

Boxes are normalized [ymin, xmin, ymax, xmax] ("yxyx") unless a function says otherwise; everything is
`keras.ops`, so it runs in tf.data (target encoding), inside a model (decoding) and in exported graphs. Format
conversion and delta encoding are Keras core's (`keras.utils.bounding_boxes`), wrapped here so the box format
and the variances are decided in one place.
"""
from keras import ops
from keras.utils import bounding_boxes

FORMAT = "yxyx"
# SSD's and Faster R-CNN's usual scaling of encoded deltas (centre y, centre x, height, width).
VARIANCES = (0.1, 0.1, 0.2, 0.2)


def convert(boxes, source, target, height=None, width=None):
    """Convert boxes between formats ("yxyx", "xywh", "center_yxhw", "rel_xyxy", ...; see Keras)."""
    return bounding_boxes.convert_format(boxes, source, target, height=height, width=width)


def box_iou(a, b):
    """IoU of matching boxes (elementwise over the leading axes; last axis 4, yxyx)."""
    inter = _intersection(a, b)
    return inter / (_area(a) + _area(b) - inter + 1e-7)


def generalized_iou(a, b):
    """GIoU (Rezatofighi et al., CVPR 2019) of matching boxes: IoU minus the share of the enclosing box that
    neither covers; it keeps a gradient when the boxes do not overlap."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    hull = ((ops.maximum(a[..., 2], b[..., 2]) - ops.minimum(a[..., 0], b[..., 0]))
            * (ops.maximum(a[..., 3], b[..., 3]) - ops.minimum(a[..., 1], b[..., 1])))
    return inter / (union + 1e-7) - (hull - union) / (hull + 1e-7)


def pairwise_iou(a, b):
    """IoU of every box of a (..., M, 4) with every box of b (..., N, 4): (..., M, N)."""
    return bounding_boxes.compute_iou(a, b, FORMAT)


def encode(anchors, boxes, variances=VARIANCES):
    """Boxes as deltas from their anchors (centre offsets over anchor size, log size ratios), over variances."""
    return bounding_boxes.encode_box_to_deltas(anchors, boxes, anchor_format=FORMAT, box_format=FORMAT,
                                               variance=list(variances))


def decode(anchors, deltas, variances=VARIANCES):
    """The boxes that `deltas` encode against `anchors` (the inverse of encode)."""
    return bounding_boxes.decode_deltas_to_boxes(anchors, deltas, anchor_format=FORMAT, box_format=FORMAT,
                                                 variance=list(variances))


def match(anchors, boxes, valid, positive_iou=0.5, negative_iou=0.4):
    """Assign ground-truth boxes to anchors.

    anchors (A, 4); boxes (..., N, 4) and valid (..., N) bool: padded ground truth of one image or a batch.
    Returns (index (..., A) int32: the box each anchor regresses to, label (..., A) int32: 1 positive,
    0 negative (background), -1 ignored). An anchor is positive at IoU >= positive_iou with its best box,
    negative below negative_iou, ignored between (the band RetinaNet and Faster R-CNN leave out of the loss);
    each valid box's best anchor is made positive for it, so no object goes without an anchor (SSD's and
    Faster R-CNN's rule).
    """
    iou = pairwise_iou(boxes, anchors)  # (..., N, A)
    iou = ops.where(valid[..., :, None], iou, -1.0)
    index = ops.cast(ops.argmax(iou, axis=-2), "int32")  # (..., A)
    best = ops.max(iou, axis=-2)
    label = ops.where(best >= positive_iou, 1, ops.where(best < negative_iou, 0, -1))
    # The best anchor of each valid box is claimed by that box (by the first of several boxes sharing it).
    best_anchor = ops.cast(ops.argmax(iou, axis=-1), "int32")  # (..., N)
    claims = ops.logical_and(best_anchor[..., :, None] == ops.arange(ops.shape(anchors)[0], dtype="int32"),
                             valid[..., :, None])  # (..., N, A)
    claimed = ops.any(claims, axis=-2)
    claimer = ops.cast(ops.argmax(ops.cast(claims, "int32"), axis=-2), "int32")
    index = ops.where(claimed, claimer, index)
    label = ops.where(claimed, 1, label)
    no_box = ops.logical_not(ops.any(valid, axis=-1, keepdims=True))
    return index, ops.cast(ops.where(no_box, 0, label), "int32")


def smooth_l1(x, beta=1.0):
    """Fast R-CNN's smooth L1 (Huber with its transition at beta), elementwise: the box loss of every head that
    regresses deltas."""
    absolute = ops.abs(x)
    return ops.where(absolute < beta, 0.5 * x * x / beta, absolute - 0.5 * beta)


def _intersection(a, b):
    """Area shared by matching boxes."""
    h = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    w = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    return h * w


def _area(a):
    """Area of boxes, zero for inverted ones."""
    return ops.maximum(a[..., 2] - a[..., 0], 0.0) * ops.maximum(a[..., 3] - a[..., 1], 0.0)
