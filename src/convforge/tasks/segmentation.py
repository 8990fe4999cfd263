"""Semantic segmentation: the class of every pixel, scored by mean IoU over a streaming confusion matrix.

Target: a class map (H, W) uint8 at the training size, 0 the background and c + 1 the dataset's class c, built
from the objects' masks (rasterized by pycocotools from COCO polygons or RLE) painted in annotation order, so a
later object covers an earlier one as it does in the image; crowd regions get the ignore label (255), which the
loss and the metrics skip. The model outputs per-pixel probabilities (B, H, W, K) at the input size, K counting
the background (the run's class_names start with "background").
"""
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task

BACKGROUND = "background"
IGNORE_LABEL = 255  # heads.segmentation.IGNORE_LABEL, without importing Keras here


def _class_map(example, context):
    """The example's class map: each pixel the class + 1 of the last object covering it, 0 for none, 255 where
    that object is a crowd region."""
    import tensorflow as tf

    masks = tf.cast(example["masks"], tf.int32)  # (N, H, W)
    count = tf.shape(masks)[0]
    labels = tf.where(example["is_crowd"], IGNORE_LABEL, tf.cast(example["classes"], tf.int32) + 1)
    # The last object covering a pixel wins: its rank (1..N) is the largest among the covering ones.
    ranks = masks * tf.range(1, count + 1)[:, None, None]
    top = tf.reduce_max(tf.concat([tf.zeros_like(ranks[:1]), ranks], 0), axis=0)
    painted = tf.gather(tf.concat([[0], labels], 0), top)
    return tf.ensure_shape(tf.cast(painted, tf.uint8), [context.height, context.width])


class SegmentationOptions(BaseModel):
    """The `head:` section of a segmentation recipe."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["fcn32s", "fcn16s", "fcn8s", "unet", "dilated"] = Field(
        "unet", description="the decoder: fcn32s/16s/8s (score maps of C5, + C4, + C3 fused coarse to fine), "
                            "unet (up one level at a time, concatenated with that level's features) or dilated "
                            "(DeepLab-v3's atrous pyramid on C5 of a dilated backbone, e.g. resnet with "
                            "output_stride: 8)")
    upsampling: Literal["unpool", "transpose", "bilinear"] = Field(
        "transpose", description="unpool (into the encoder's max-pool positions; needs a backbone that downsamples "
                                 "by 2x2 max-pools, e.g. vgg), transpose (learnable, initialized bilinear) or "
                                 "bilinear (a fixed resize, then a 3x3 conv)")
    levels: Optional[list[Literal["C0", "C1", "C2", "C3", "C4", "C5"]]] = Field(
        None, description="backbone levels the decoder reads (default: C3-C5 for fcn8s, C4-C5 for fcn16s, C5 for "
                          "fcn32s, every level the backbone has for unet: C0-C4 on unet's own encoder, C1-C5 on "
                          "the others)")
    channels: int = Field(16, ge=1, description="unet's decoder width at full resolution (doubling per level "
                                                "up to 8x); the dilated decoder's pyramid width")
    rates: list[int] = Field(default_factory=lambda: [2, 4, 6], min_length=1,
                             description="the dilated decoder's atrous rates (DeepLab's 6, 12, 18 suit 513 px at "
                                         "stride 16; these, small maps)")
    loss: Literal["cross_entropy", "focal"] = Field("cross_entropy", description="the pixel loss")
    focal_gamma: float = Field(2.0, ge=0, description="focal loss's focusing exponent (loss: focal)")
    dice_weight: float = Field(0.0, ge=0, description="weight of a soft Dice loss added to the pixel loss")
    class_weights: Optional[list[float]] = Field(None, description="a weight per class, background first")
    ignore_label: int = Field(IGNORE_LABEL, ge=0, le=255, description="the label of pixels no loss or metric "
                                                                     "counts (crowd regions)")

    @model_validator(mode="after")
    def _levels_fit_the_decoder(self):
        need = {"fcn32s": {"C5"}, "fcn16s": {"C4", "C5"}, "fcn8s": {"C3", "C4", "C5"}}.get(self.name, set())
        if self.levels is not None and not need <= set(self.levels):
            raise ValueError(f"{self.name} fuses {', '.join(sorted(need))}, and levels {self.levels} leave out "
                             f"{', '.join(sorted(need - set(self.levels)))}; accepted: levels including them")
        return self


# UNet's default is every level of its backbone (known when it is built), so it requires none beforehand.
_DEFAULT_LEVELS = {"fcn32s": ("C5",), "fcn16s": ("C4", "C5"), "fcn8s": ("C3", "C4", "C5"), "unet": (),
                   "dilated": ("C5",)}


@register_task
class Segmentation(Task):
    """Label every pixel with its class (0: background)."""

    name = "segmentation"
    headline_metric = "mean_iou"
    annotations = frozenset({"masks"})
    Options = SegmentationOptions
    parser = Parser(keeps_record=lambda r: True, keeps_example=lambda e: True, target=_class_map)

    @property
    def levels(self):
        """The backbone levels the decoder reads."""
        return tuple(self.options.levels or _DEFAULT_LEVELS[self.options.name])

    def label_names(self, class_names, source=None):
        """The model's classes: the background, then the dataset's."""
        names = list(class_names)
        return names if names[:1] == [BACKGROUND] else [BACKGROUND, *names]

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """The backbone's levels into the decoder; outputs (B, H, W, num_classes) probabilities."""
        import keras

        from convforge.backbones import build_backbone, feature_levels
        from convforge.backbones.common import level_strides, precision
        from convforge.heads import segmentation as head
        from convforge.heads.classification import head_dtype
        from convforge.registry import require_levels

        require_levels(architecture, self.levels, options, who=f"the {self.options.name} decoder")
        backbone = build_backbone(architecture, input_shape=input_shape, include_top=False, dtype=dtype,
                                  **(options or {}))
        found = feature_levels(backbone)
        strides = level_strides(backbone)
        levels = {name: found[name] for name in self.levels or found}
        size = tuple(input_shape[:2])
        with precision(dtype):
            switches = head.switches_of(backbone) if self.options.upsampling == "unpool" else None
            if self.options.name == "unet":
                outputs = head.unet(levels, strides, num_classes, self.options.channels, self.options.upsampling,
                                    size, switches, head_dtype())
            elif self.options.name == "dilated":
                outputs = head.dilated(levels, strides, num_classes, self.options.channels, self.options.rates,
                                       self.options.upsampling, size, switches, head_dtype())
            else:
                variant = int(self.options.name[3:-1])
                outputs = head.fcn(levels, strides, num_classes, variant, self.options.upsampling, size, switches,
                                   head_dtype())
        return keras.Model(backbone.input, outputs, name=f"{architecture}_{self.options.name}")

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """The pixel loss (cross-entropy or focal, optional Dice, class weights, ignore label); mean IoU and
        pixel accuracy as metrics."""
        import keras

        from convforge.heads.segmentation import PixelAccuracy, PixelLoss

        classes = model.output.shape[-1]
        o = self.options
        if o.class_weights is not None and len(o.class_weights) != classes:
            raise ValueError(f"head.class_weights has {len(o.class_weights)} weights for {classes} classes "
                             f"(background first); accepted: one weight per class")
        loss = PixelLoss(classes, o.class_weights, o.ignore_label, o.focal_gamma if o.loss == "focal" else 0.0,
                         o.dice_weight)
        mean_iou = keras.metrics.MeanIoU(classes, name="mean_iou", ignore_class=o.ignore_label,
                                         sparse_y_true=True, sparse_y_pred=False)
        return dict(loss=loss, metrics=[mean_iou, PixelAccuracy(o.ignore_label)])

    def spatial_of(self, targets):
        """The class map as one mask (B, 1, H, W), which geometric augmentations move by nearest neighbour."""
        return {"masks": targets[:, None]}

    def with_spatial(self, targets, moved):
        """The moved class map."""
        return moved["masks"][:, 0]

    @classmethod
    def recognizes(cls, model):
        """One output (B, H, W, K) made by a softmax."""
        from convforge.export.saved_model import output_kind

        output = model.output
        return (not isinstance(output, (dict, list, tuple)) and len(output.shape) == 4
                and output_kind(output) == "probabilities")

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """Mean IoU over the classes present, pixel accuracy and each class's IoU, from one confusion matrix
        streamed over the dataset."""
        from convforge.heads.segmentation import confusion_matrix, iou_from_confusion

        matrix = None
        for images, labels in dataset:
            probabilities = np.asarray(model(images, training=False), dtype="float32")
            classes = probabilities.shape[-1]
            batch = confusion_matrix(np.asarray(labels), probabilities.argmax(-1), classes, self.options.ignore_label)
            matrix = batch if matrix is None else matrix + batch
        if matrix is None:
            return {"mean_iou": 0.0, "pixel_accuracy": 0.0, "iou_per_class": {}}
        iou, mean, accuracy = iou_from_confusion(matrix)
        names = list(class_names) if len(class_names) == len(iou) else [str(i) for i in range(len(iou))]
        return {"mean_iou": mean, "pixel_accuracy": accuracy,
                "iou_per_class": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou)},
                "pixels": int(matrix.sum())}

    def describe(self, outputs, class_names, top_k=3):
        """The classes covering most of the image (background aside), with their share of the pixels."""
        classes = np.asarray(outputs, dtype="float32").argmax(-1)
        counts = np.bincount(classes.reshape(-1), minlength=len(class_names) or classes.max() + 1)
        order = [int(c) for c in np.argsort(-counts) if c != 0 and counts[c] > 0][:top_k]
        name = lambda c: class_names[c] if c < len(class_names) else str(c)  # noqa: E731
        return [{"class": name(c), "probability": float(counts[c] / classes.size)} for c in order]

    def draw(self, image, outputs, class_names, out_path):
        """The image with each pixel's class in its colour over it, and a legend."""
        from convforge.visualize import draw_segmentation

        classes = np.asarray(outputs, dtype="float32").argmax(-1)
        return draw_segmentation(image, classes, class_names, out_path)
