"""Single-object localization: the class of the main object and its box, from one regression head."""
import numpy as np
import keras
from keras import layers, ops

from convforge.backbones import build_backbone
from convforge.backbones.common import head_dtype
from convforge.tasks.base import Task
from convforge.tasks.classification import _name


def box_iou(a, b):
    """IoU of matching boxes [ymin, xmin, ymax, xmax] (any backend tensors or arrays, last axis 4)."""
    inter_h = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_h * inter_w
    area_a = ops.maximum(a[..., 2] - a[..., 0], 0.0) * ops.maximum(a[..., 3] - a[..., 1], 0.0)
    area_b = ops.maximum(b[..., 2] - b[..., 0], 0.0) * ops.maximum(b[..., 3] - b[..., 1], 0.0)
    return inter / (area_a + area_b - inter + 1e-7)


@keras.saving.register_keras_serializable(package="convforge")
class GIoULoss(keras.losses.Loss):
    """1 - generalized IoU (Rezatofighi et al., CVPR 2019): a box loss that still has a gradient when boxes
    do not overlap, unlike 1 - IoU."""

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        iou = box_iou(y_true, y_pred)
        inter_h = ops.maximum(ops.minimum(y_true[..., 2], y_pred[..., 2]) - ops.maximum(y_true[..., 0], y_pred[..., 0]), 0.0)
        inter_w = ops.maximum(ops.minimum(y_true[..., 3], y_pred[..., 3]) - ops.maximum(y_true[..., 1], y_pred[..., 1]), 0.0)
        area_t = (y_true[..., 2] - y_true[..., 0]) * (y_true[..., 3] - y_true[..., 1])
        area_p = ops.maximum(y_pred[..., 2] - y_pred[..., 0], 0.0) * ops.maximum(y_pred[..., 3] - y_pred[..., 1], 0.0)
        union = area_t + area_p - inter_h * inter_w
        hull = ((ops.maximum(y_true[..., 2], y_pred[..., 2]) - ops.minimum(y_true[..., 0], y_pred[..., 0]))
                * (ops.maximum(y_true[..., 3], y_pred[..., 3]) - ops.minimum(y_true[..., 1], y_pred[..., 1])))
        return 1.0 - (iou - (hull - union) / (hull + 1e-7))


@keras.saving.register_keras_serializable(package="convforge")
class MeanBoxIoU(keras.metrics.MeanMetricWrapper):
    """Mean IoU between predicted and true boxes."""

    def __init__(self, name="iou", dtype=None):
        super().__init__(fn=lambda t, p: box_iou(ops.cast(t, p.dtype), p), name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


class Localization(Task):
    """Predict the class of the image's main object and its box (normalized [ymin, xmin, ymax, xmax])."""

    name = "localization"
    headline_metric = "accuracy_at_iou50"

    def __init__(self, box_loss="giou"):
        self.box_loss = box_loss

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """Backbone features, global-average pooled, into a softmax class head and a sigmoid box head."""
        from convforge.backbones.common import precision

        backbone = build_backbone(architecture, input_shape=input_shape, include_top=False, pooling="avg",
                                  dtype=dtype, **(options or {}))
        with precision(dtype):
            features = backbone.output
            label = layers.Dense(num_classes, activation="softmax", dtype=head_dtype(), name="label")(features)
            hidden = layers.Dense(256, activation="relu", name="box_hidden")(features)
            raw = layers.Dense(4, activation="sigmoid", dtype=head_dtype(), name="box_raw")(hidden)
            box = BoxOrder(name="box")(raw)
        return keras.Model(backbone.input, {"label": label, "box": box}, name=f"{architecture}_localization")

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """Cross-entropy for the class, GIoU (or L1) for the box; accuracy and mean IoU as metrics."""
        if one_hot or label_smoothing:
            cls_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
            acc = keras.metrics.CategoricalAccuracy(name="accuracy")
        else:
            cls_loss = keras.losses.SparseCategoricalCrossentropy()
            acc = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        box_loss = GIoULoss() if self.box_loss == "giou" else keras.losses.MeanAbsoluteError()
        return dict(loss={"label": cls_loss, "box": box_loss}, metrics={"label": [acc], "box": [MeanBoxIoU()]})

    def evaluate(self, model, dataset, class_names, out_dir=None):
        """Class accuracy, mean IoU, and accuracy@IoU>=0.5 (right class and a box overlapping >= 0.5)."""
        labels, boxes, pred_labels, pred_boxes = [], [], [], []
        for images, targets in dataset:
            out = model(images, training=False)
            t = np.asarray(targets["label"])
            labels.append(t.argmax(-1) if t.ndim == 2 else t)
            boxes.append(np.asarray(targets["box"], dtype="float32"))
            pred_labels.append(np.asarray(out["label"], dtype="float32").argmax(-1))
            pred_boxes.append(np.asarray(out["box"], dtype="float32"))
        labels, boxes = np.concatenate(labels).astype(int), np.concatenate(boxes)
        pred_labels, pred_boxes = np.concatenate(pred_labels), np.concatenate(pred_boxes)
        iou = np.asarray(box_iou(boxes, pred_boxes))
        correct = pred_labels == labels
        return {"accuracy": float(correct.mean()), "iou": float(iou.mean()),
                "accuracy_at_iou50": float((correct & (iou >= 0.5)).mean()), "count": int(len(labels))}

    def describe(self, outputs, class_names, top_k=3):
        """The most likely class, its probability and the box in normalized [ymin, xmin, ymax, xmax]."""
        probs = np.asarray(outputs["label"], dtype="float32").reshape(-1)
        i = int(probs.argmax())
        box = [round(float(v), 4) for v in np.asarray(outputs["box"], dtype="float32").reshape(-1)]
        return [{"class": _name(class_names, i), "probability": float(probs[i]), "box": box}]


@keras.saving.register_keras_serializable(package="convforge")
class BoxOrder(layers.Layer):
    """Turn four free sigmoid outputs into a valid box: ymin <= ymax and xmin <= xmax."""

    receptive_field_passthrough = True

    def call(self, x):
        y0, x0, y1, x1 = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
        return ops.stack([ops.minimum(y0, y1), ops.minimum(x0, x1), ops.maximum(y0, y1), ops.maximum(x0, x1)], -1)

    def compute_output_shape(self, input_shape):
        return input_shape
