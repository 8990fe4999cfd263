"""Instance segmentation: every object's class, box and mask, scored by COCO segm AP (pycocotools, RLE masks).

Detection's spine with masks added (the task subclasses tasks/detection.py): targets are the image's objects
padded to data.max_instances with their masks rasterized at the training size; the trained model's raw output
carries Mask R-CNN's mask logits after Faster R-CNN's predictions; the saved inference model outputs the
detection dict plus `masks` (B, N, M, M): each detection's mask probabilities in its box's frame, which
evaluation and `predict` paste into the image.
"""
from typing import Literal

import numpy as np
from pydantic import Field

from convforge.tasks import register_task
from convforge.tasks.base import Parser
from convforge.tasks.detection import OUTPUT_KEYS, Detection, FasterRCNNOptions


def _instances_with_masks(example, context):
    """The padded objects of an example with their masks (M, H, W) uint8."""
    from convforge.data.instances import pad_instances

    padded = pad_instances(example, context, kinds=("boxes", "masks"))
    return {k: padded[k] for k in ("boxes", "classes", "is_crowd", "valid", "masks")}


class MaskRCNNOptions(FasterRCNNOptions):
    """Mask R-CNN: Faster R-CNN (its options) plus a mask head on RoIAlign crops of the proposals
    (heads/mask_rcnn.py)."""

    name: Literal["mask_rcnn"] = "mask_rcnn"
    mask_pool_size: int = Field(7, ge=2, description="RoIAlign's bins per side for the mask head; its masks are "
                                                     "twice this per side")
    mask_channels: int = Field(64, ge=1, description="width of the mask head's convs")
    mask_convs: int = Field(2, ge=0, description="3x3 convs of the mask head before its 2x upsampling (the paper: 4)")
    mask_loss_weight: float = Field(1.0, gt=0, description="weight of the mask loss")
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="mask probability from which a pasted pixel is the "
                                                               "object's")


@register_task
class InstanceSegmentation(Detection):
    """Find every object: its class, box (normalized [ymin, xmin, ymax, xmax]) and mask, after NMS."""

    name = "instance_segmentation"
    headline_metric = "AP50"
    # Its masks are computed after NMS, from the kept boxes: TFLite's NMS op cannot end this graph.
    ends_in_nms = False
    annotations = frozenset({"boxes", "masks"})
    Options = MaskRCNNOptions
    parser = Parser(keeps_record=lambda r: True, keeps_example=lambda e: True, target=_instances_with_masks)
    heads = {"mask_rcnn": ("convforge.heads.mask_rcnn", MaskRCNNOptions)}
    default_head = "mask_rcnn"
    output_keys = (*OUTPUT_KEYS, "masks")

    def public_model(self, model):
        """What convforge.build_model returns: the inference model (detections and masks, post-NMS); the model to
        train is its `training_model` attribute (what the trainer builds)."""
        inference = self.inference_model(model)
        # Set past Keras' attribute tracking: the training model is not a sublayer of the inference model.
        object.__setattr__(inference, "training_model", model)
        return inference

    def adapt_targets(self, model, targets):
        """Detection's (B, M, 6) columns, then each object's mask at the training size, flattened: (B, M, 6 + H W)."""
        import tensorflow as tf

        packed = super().adapt_targets(model, targets)
        masks = tf.cast(targets["masks"], tf.float32)
        shape = tf.shape(masks)
        return tf.concat([packed, tf.reshape(masks, [shape[0], shape[1], shape[2] * shape[3]])], axis=-1)

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """COCO segm AP of the pasted masks (AP, AP50, ...) and box AP (box_AP, ...), by pycocotools; with the val
        source's records, in the dataset's own ids and pixels, written as segmentations.json and detections.json."""
        from convforge.evaluate.coco import evaluate_detections

        return evaluate_detections(model, dataset, class_names, source, out_dir, masks=True,
                                   mask_threshold=self.options.mask_threshold)

    def describe(self, outputs, class_names, top_k=3):
        """Each detection (as detection describes it) with its mask's share of its box."""
        found = super().describe(outputs, class_names, top_k)
        masks = np.asarray(outputs["masks"], dtype="float32")
        for i, item in enumerate(found):
            item["mask_fill"] = round(float((masks[i] >= self.options.mask_threshold).mean()), 3)
        return found

    def draw(self, image, outputs, class_names, out_path):
        """The image with each shown detection's mask in its own colour, its box and its class."""
        from convforge.data.instances import paste_masks
        from convforge.visualize import draw_instances

        found = self.describe(outputs, class_names)
        pixels = np.asarray(image)
        masks = paste_masks(np.asarray(outputs["masks"])[:len(found)], np.asarray(outputs["boxes"])[:len(found)],
                            pixels.shape[0], pixels.shape[1], self.options.mask_threshold)
        return draw_instances(image, found, masks, out_path)
