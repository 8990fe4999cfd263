"""Object detection: every object's class and box, scored by COCO AP (pycocotools).

Targets: the image's objects padded to data.max_instances ({"boxes", "classes", "is_crowd", "valid"}), the same
in training and evaluation; the head's loss matches them to its anchors itself, so geometric augmentations
only move boxes. The trained model outputs raw per-anchor predictions; the saved inference model ends in box
decoding and NMS: {"boxes" (B, N, 4) normalized yxyx, "scores" (B, N), "classes" (B, N) int32,
"num_detections" (B,) int32}, padded to N = max_detections.
"""
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task
from convforge.tasks.classification import _name

OUTPUT_KEYS = ("boxes", "scores", "classes", "num_detections")


def _instances(example, context):
    """The padded objects of an example (boxes, classes, crowd flags, valid)."""
    from convforge.data.instances import pad_instances

    padded = pad_instances(example, context)
    return {k: padded[k] for k in ("boxes", "classes", "is_crowd", "valid")}


_LEVELS = Literal["C1", "C2", "C3", "C4", "C5"]


class DetectionOptions(BaseModel):
    """The `head:` settings every detector shares; each head's own class adds its anchors and loss settings."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["ssd", "yolo", "faster_rcnn", "overfeat", "rcnn"] = Field(
        "ssd", description="the detector: ssd (anchors on several levels, multibox loss), yolo (grid cells, "
                           "objectness), faster_rcnn (two stages: region proposals, then RoIAlign and a box head), "
                           "overfeat (a window classifier slid over an image pyramid) or rcnn (selective-search "
                           "proposals, each warped and classified by a CNN)")
    levels: list[_LEVELS] = Field(default_factory=lambda: ["C3", "C4", "C5"], min_length=1,
                                  description="backbone levels the head reads")
    channels: int = Field(64, ge=1, description="width of the head's two 3x3 convs per level")
    anchor_size: float = Field(4.0, gt=0, description="anchor side at scale 1, in strides of its level")
    anchor_scales: list[float] = Field(default_factory=lambda: [1.0, 1.26], min_length=1)
    aspect_ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1,
                                       description="anchor height / width")
    box_loss_weight: float = Field(1.0, gt=0)
    max_detections: int = Field(100, ge=1)
    nms_iou: float = Field(0.5, gt=0, le=1, description="IoU over which NMS drops the lower-scored box")
    score_threshold: float = Field(0.05, ge=0, lt=1)


class SSDOptions(DetectionOptions):
    """SSD: anchors matched by IoU, softmax classes with a background class, hard negative mining."""

    name: Literal["ssd"] = "ssd"
    positive_iou: float = Field(0.5, gt=0, le=1, description="IoU from which an anchor learns an object")
    negative_iou: float = Field(0.4, gt=0, le=1, description="IoU under which an anchor is background; "
                                                              "between the two it is ignored")
    negative_ratio: float = Field(3.0, gt=0, description="hard negatives kept per positive anchor")


class YoloOptions(DetectionOptions):
    """YOLO: objects assigned to nearby cells' anchors of fitting shape; objectness and per-class sigmoids."""

    name: Literal["yolo"] = "yolo"
    anchor_scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    match_ratio: float = Field(4.0, gt=1, description="an anchor learns an object when their heights and widths "
                                                      "differ by less than this factor")
    ignore_iou: float = Field(0.5, gt=0, le=1, description="an unassigned anchor whose box overlaps an object by "
                                                            "this much is left out of the no-object loss")
    box_loss_weight: float = Field(2.0, gt=0, description="weight of the GIoU box loss")
    objectness_weight: float = Field(1.0, gt=0)
    class_weight: float = Field(1.0, gt=0)
    focal_gamma: float = Field(0.0, ge=0, description="focal loss on objectness when > 0 (1.5-2 is usual)")


class FasterRCNNOptions(DetectionOptions):
    """Faster R-CNN: a region proposal network on the levels (with an optional feature pyramid), then RoIAlign and a
    box head per proposal (heads/two_stage.py); anchors suit small images (16-64 px at stride 16)."""

    name: Literal["faster_rcnn"] = "faster_rcnn"
    levels: list[_LEVELS] = Field(default_factory=lambda: ["C4"], min_length=1,
                                  description="backbone levels the RPN and RoIAlign read; several need fpn: true")
    fpn: bool = Field(False, description="a feature pyramid (FPN) over the levels; each proposal is cropped from "
                                         "the level whose anchors fit its size")
    channels: int = Field(64, ge=1, description="width of the RPN's 3x3 conv (and of the pyramid's levels)")
    anchor_size: float = Field(2.0, gt=0, description="anchor side at scale 1, in strides of its level")
    anchor_scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    rpn_positive_iou: float = Field(0.7, gt=0, le=1, description="IoU from which an anchor is an object to the RPN")
    rpn_negative_iou: float = Field(0.3, gt=0, le=1, description="IoU under which an anchor is background to the RPN")
    rpn_samples: int = Field(256, ge=1, description="anchors per image in the RPN loss")
    rpn_positive_fraction: float = Field(0.5, gt=0, le=1, description="the most of rpn_samples that are objects")
    pre_nms_proposals: int = Field(600, ge=1, description="best-scored RPN boxes per image that NMS looks at")
    proposal_nms_iou: float = Field(0.7, gt=0, le=1, description="IoU over which proposal NMS drops a box")
    train_proposals: int = Field(128, ge=1, description="proposals per image while training (the box head sees "
                                                        "all of them; the loss samples roi_samples)")
    proposals: int = Field(100, ge=1, description="proposals per image at inference")
    roi_positive_iou: float = Field(0.5, gt=0, le=1, description="IoU from which a proposal learns an object's "
                                                                 "class and box (below it: background)")
    roi_samples: int = Field(128, ge=1, description="proposals per image in the box head's loss")
    roi_positive_fraction: float = Field(0.25, gt=0, le=1, description="the most of roi_samples that are objects")
    pool_size: int = Field(7, ge=1, description="RoIAlign's output bins per side")
    sampling_ratio: int = Field(2, ge=1, description="RoIAlign's bilinear samples per bin side")
    fc_units: int = Field(256, ge=1, description="width of the box head's two fully connected layers")

    @model_validator(mode="after")
    def _one_level_without_fpn(self):
        if not self.fpn and len(self.levels) != 1:
            raise ValueError(f"faster_rcnn reads one level without a feature pyramid, got levels {self.levels}; "
                             f"accepted: one level (e.g. [C4]) or fpn: true")
        return self


class OverFeatOptions(DetectionOptions):
    """OverFeat: a window classifier (the backbone's trunk, then fully connected layers as convolutions) slid over
    an image pyramid in one pass per scale, trained densely on every window (heads/overfeat.py); the backbone
    must not pad (e.g. alexnet_original with padding 0), so each position is exactly its window's crop."""

    name: Literal["overfeat"] = "overfeat"
    levels: list[_LEVELS] = Field(default_factory=lambda: ["C5"], min_length=1, max_length=1,
                                  description="the level the fully connected layers read (the trunk's end)")
    window: int = Field(32, ge=8, description="side in pixels of the window the classifier reads; windows step "
                                              "by the backbone's stride")
    scales: list[float] = Field(default_factory=lambda: [0.5, 0.71, 1.0, 1.41, 2.0], min_length=1,
                                description="the image pyramid: the input resized by each factor (to whole "
                                            "window steps)")
    fc_units: int = Field(128, ge=1, description="width of the two fully connected layers")
    positive_iou: float = Field(0.5, gt=0, le=1, description="IoU from which a window learns an object")
    negative_iou: float = Field(0.4, gt=0, le=1, description="IoU under which a window is background; between "
                                                              "the two it is ignored")
    negative_ratio: float = Field(3.0, gt=0, description="hard negative windows kept per positive one")


class RCNNOptions(DetectionOptions):
    """R-CNN: selective-search proposals (Felzenszwalb segments grouped bottom-up, computed in NumPy), each warped
    to crop_size and classified by the backbone's trunk and fully connected layers, with class-specific box
    deltas (heads/rcnn.py). The model runs in TensorFlow only (its proposals are Python)."""

    name: Literal["rcnn"] = "rcnn"
    levels: list[_LEVELS] = Field(default_factory=lambda: ["C5"], min_length=1, max_length=1,
                                  description="the level the fully connected layers read (the trunk's end)")
    crop_size: int = Field(32, ge=8, description="side in pixels every proposal is warped to")
    context: int = Field(4, ge=0, description="pixels of the warped crop around the proposal on each side "
                                              "(the paper's 16 of 227)")
    proposals: int = Field(100, ge=1, description="the most proposals per image (selective search's best)")
    segment_scales: list[float] = Field(default_factory=lambda: [100.0, 300.0], min_length=1,
                                        description="Felzenszwalb's scale per over-segmentation (each its own "
                                                    "grouping hierarchy)")
    min_segment: int = Field(20, ge=1, description="the smallest segment in pixels")
    fc_units: int = Field(128, ge=1, description="width of the two fully connected layers")
    positive_iou: float = Field(0.5, gt=0, le=1, description="IoU from which a proposal learns an object's class")
    negative_iou: float = Field(0.5, gt=0, le=1, description="IoU under which a proposal is background; between "
                                                              "the two it is ignored")
    regress_iou: float = Field(0.6, gt=0, le=1, description="IoU from which a proposal learns its object's box")
    negative_ratio: float = Field(3.0, gt=0, description="background proposals weigh at most this many times "
                                                         "the positive ones in each image")


# name -> (the head's module: build, loss, outputs and optionally metrics; its options)
HEADS = {"ssd": ("convforge.heads.single_shot", SSDOptions), "yolo": ("convforge.heads.yolo", YoloOptions),
         "faster_rcnn": ("convforge.heads.two_stage", FasterRCNNOptions),
         "overfeat": ("convforge.heads.overfeat", OverFeatOptions), "rcnn": ("convforge.heads.rcnn", RCNNOptions)}


def _head_module(heads, name):
    """The module implementing a head of a task's heads table."""
    import importlib

    return importlib.import_module(heads[name][0])


@register_task
class Detection(Task):
    """Find every object: its class and box (normalized [ymin, xmin, ymax, xmax]), after NMS."""

    name = "detection"
    headline_metric = "AP50"
    ends_in_nms = True
    annotations = frozenset({"boxes"})
    Options = DetectionOptions
    parser = Parser(keeps_record=lambda r: True, keeps_example=lambda e: True, target=_instances)
    heads = HEADS
    default_head = "ssd"
    output_keys = OUTPUT_KEYS

    @classmethod
    def options_class(cls, options):
        """The options class of the head a `head:` section names (the shared one for an unknown name, which
        then fails validation listing the heads)."""
        default = cls.default_head
        name = (options or {}).get("name", default) if isinstance(options, dict) else getattr(options, "name", default)
        return cls.heads[name][1] if name in cls.heads else cls.Options

    @property
    def levels(self):
        """The backbone levels the head reads."""
        return tuple(self.options.levels)

    def anchor_spec(self, architecture, input_shape, num_classes, options=None):
        """The anchors of this head on a backbone at an input size (from the registry's level strides)."""
        from convforge.layers.anchors import anchor_spec
        from convforge.registry import get_spec, require_levels

        require_levels(architecture, self.levels, options, who=f"the {self.options.name} head")
        strides = get_spec(architecture).feature_levels(options)
        spec = anchor_spec(input_shape[:2], {lv: strides[lv] for lv in self.levels}, self.options.anchor_size,
                           self.options.anchor_scales, self.options.aspect_ratios)
        return {**spec, "num_classes": int(num_classes)}

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """The backbone's levels into the head; outputs the raw per-anchor predictions (see inference_model)."""
        import keras

        from convforge.backbones import build_backbone, feature_levels
        from convforge.backbones.common import precision
        from convforge.heads.classification import head_dtype

        spec = self.anchor_spec(architecture, input_shape, num_classes, options)
        backbone = build_backbone(architecture, input_shape=input_shape, include_top=False, dtype=dtype,
                                  **(options or {}))
        with precision(dtype):
            raw = _head_module(self.heads, self.options.name).build(feature_levels(backbone), num_classes, spec, self.options,
                                                        head_dtype())
        return keras.Model(backbone.input, raw, name=f"{architecture}_{self.options.name}")

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """The head's loss over the model's anchors (and the metrics of a head module that has `metrics`)."""
        spec = self.spec_of(model)
        head = _head_module(self.heads, self.options.name)
        args = dict(loss=head.loss(spec, spec["num_classes"], self.options))
        if hasattr(head, "metrics"):
            args["metrics"] = head.metrics(spec, spec["num_classes"], self.options)
        return args

    def adapt_targets(self, model, targets):
        """Pack the padded objects as the loss reads them: (B, M, 6) [box, class, valid and not crowd]."""
        import tensorflow as tf

        usable = tf.logical_and(targets["valid"], tf.logical_not(targets["is_crowd"]))
        return tf.concat([targets["boxes"], tf.cast(targets["classes"], tf.float32)[..., None],
                          tf.cast(usable, tf.float32)[..., None]], axis=-1)

    def inference_model(self, model):
        """The trained model ending in box decoding and NMS (a model that already does is returned as is)."""
        import keras

        if self.recognizes(model):
            return model
        outputs = _head_module(self.heads, self.options.name).outputs(model.output, self.spec_of(model), self.options)
        return keras.Model(model.input, outputs, name=model.name)

    def spec_of(self, model):
        """The anchor spec a training model was built with, read from its raw output layer (so it survives
        saving); refuses a model of another head."""
        from convforge.layers.detections import raw_detections_layer

        layer = raw_detections_layer(model)
        if layer is None:
            raise ValueError(f"model {model.name!r} has no detection head's raw output; build it with the "
                             f"detection task")
        if layer.head != self.options.name:
            raise ValueError(f"model {model.name!r} has a {layer.head} head, but the recipe's head is "
                             f"{self.options.name!r}; accepted: head: {{name: {layer.head}}}")
        return layer.spec

    @classmethod
    def recognizes(cls, model):
        """A dict output with boxes, scores, classes and num_detections."""
        return isinstance(model.output, dict) and set(model.output) == set(cls.output_keys)

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """COCO AP (pycocotools) of the detections; given the val source's records, in the dataset's own ids and
        original pixels, written into out_dir as COCO results (evaluate.coco.evaluate_detections)."""
        from convforge.evaluate.coco import evaluate_detections

        return evaluate_detections(model, dataset, class_names, source, out_dir)

    def describe(self, outputs, class_names, top_k=3):
        """Each detection (score >= 0.25, best first; at least the best one): class, score and box."""
        n = int(np.asarray(outputs["num_detections"]).reshape(()))
        scores = np.asarray(outputs["scores"], dtype="float32")[:n]
        shown = [i for i in range(n) if scores[i] >= 0.25] or list(range(min(n, 1)))
        return [{"class": _name(class_names, int(outputs["classes"][i])), "probability": float(scores[i]),
                 "box": [round(float(v), 4) for v in outputs["boxes"][i]]} for i in shown]

