"""Single-object localization: the class of the main object and its box, from one regression head.

Target: {"label": int32 class id, "box": float32 [ymin, xmin, ymax, xmax] normalized to 0..1} of the largest
non-crowd object; boxes stay normalized, so resizing leaves them valid.
"""
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task
from convforge.tasks.classification import _name


def _largest_box_index(example):
    """Index of the largest non-crowd box of an example."""
    import tensorflow as tf

    from convforge.data.instances import largest_box_index

    return largest_box_index(example["boxes"], tf.logical_not(example["is_crowd"]))


def _has_box(example):
    """Whether an example has a non-crowd object."""
    import tensorflow as tf

    return tf.reduce_any(tf.logical_not(example["is_crowd"]))


def _target(example, context):
    """The class and box of the example's largest non-crowd object."""
    import tensorflow as tf

    i = _largest_box_index(example)
    return {"label": tf.cast(example["classes"][i], tf.int32), "box": tf.cast(example["boxes"][i], tf.float32)}


class LocalizationOptions(BaseModel):
    """The `head:` section of a localization recipe."""

    model_config = ConfigDict(extra="forbid")
    box_loss: Literal["giou", "l1"] = Field("giou", description="GIoU (a gradient even without overlap) or L1")
    box_loss_weight: float = Field(1.0, gt=0, description="weight of the box loss against the class loss")
    reduce_channels: int = Field(32, ge=1, description="channels of the 1x1 conv before the box regressor "
                                                        "flattens the feature map")
    hidden_units: int = Field(256, ge=1, description="width of the box regressor's hidden layer")


@register_task
class Localization(Task):
    """Predict the class of the image's main object and its box (normalized [ymin, xmin, ymax, xmax])."""

    name = "localization"
    headline_metric = "accuracy_at_iou50"
    annotations = frozenset({"label", "boxes"})
    Options = LocalizationOptions
    parser = Parser(keeps_record=lambda r: any(not o.get("iscrowd") for o in r.get("objects", ())),
                    keeps_example=_has_box, target=_target)

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """The backbone's last feature map into a softmax class head and a box regressor that reads the map's
        positions (heads.localization)."""
        import keras

        from convforge.backbones import build_backbone
        from convforge.backbones.common import precision
        from convforge.heads.classification import head_dtype
        from convforge.heads.localization import localization_head

        backbone = build_backbone(architecture, input_shape=input_shape, include_top=False, pooling=None,
                                  dtype=dtype, **(options or {}))
        with precision(dtype):
            outputs = localization_head(backbone.output, num_classes, self.options.reduce_channels,
                                        self.options.hidden_units, head_dtype())
        return keras.Model(backbone.input, outputs, name=f"{architecture}_localization")

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """Cross-entropy for the class, GIoU (or L1) for the box; accuracy and mean IoU as metrics."""
        import keras

        from convforge.heads.localization import GIoULoss, MeanBoxIoU

        if one_hot or label_smoothing:
            cls_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
            acc = keras.metrics.CategoricalAccuracy(name="accuracy")
        else:
            cls_loss = keras.losses.SparseCategoricalCrossentropy()
            acc = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        box_loss = GIoULoss() if self.options.box_loss == "giou" else keras.losses.MeanAbsoluteError()
        return dict(loss={"label": cls_loss, "box": box_loss},
                    loss_weights={"label": 1.0, "box": self.options.box_loss_weight},
                    metrics={"label": [acc], "box": [MeanBoxIoU()]})

    @classmethod
    def recognizes(cls, model):
        """A dict output with `label` and `box`."""
        return isinstance(model.output, dict) and set(model.output) == {"label", "box"}

    def spatial_of(self, targets):
        """The one box per image as boxes (B, 1, 4)."""
        return {"boxes": targets["box"][:, None, :]}

    def with_spatial(self, targets, moved):
        """The targets with the moved box (kept even if pushed partly out: the image's class stays)."""
        return {**targets, "box": moved["boxes"][:, 0, :]}

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """Class accuracy, mean IoU, and accuracy@IoU>=0.5 (right class and a box overlapping >= 0.5)."""
        from convforge.boxes import box_iou

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
