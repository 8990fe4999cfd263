"""Mask R-CNN (He et al., ICCV 2017): Faster R-CNN (heads/two_stage.py) plus a small fully convolutional mask head on
RoIAlign crops, predicting an M x M mask per class for every proposal.

Training: the mask head runs on the training proposals; its logits (B, R, M, M, K) are appended to Faster R-CNN's
raw output. The loss is Faster R-CNN's plus, for the proposals its box head learns as objects (the same sampled
positives), the binary cross-entropy of the mask of the object's own class against the object's mask cropped to
the proposal (RoIAlign of the ground-truth mask, 0/1 at 0.5), averaged over the M x M pixels and the positives.
Ground truth arrives as y_true (B, N, 6 + H W): Faster R-CNN's six columns, then each object's mask at the
training size, flattened.

Inference: Faster R-CNN's detections (post-NMS), then RoIAlign on the detected boxes, the same mask head, and the
sigmoid of each detection's own class: `masks` (B, N, M, M) in the box's frame; evaluation pastes them into the
image (`data.instances.paste_masks`).
"""
import keras
import numpy as np
from keras import layers, ops

from convforge.heads import two_stage
from convforge.layers.roi_align import RoIAlign, bin_weights

HEAD = "mask_rcnn"


@keras.saving.register_keras_serializable(package="convforge")
class MaskHead(keras.layers.Layer):
    """RoI crops (B, R, P, P, C) -> mask logits (B, R, 2P, 2P, K): `convs` 3x3 convs + ReLU of `channels`, a 2x2
    stride-2 transposed conv + ReLU, then a 1x1 conv giving one logit per class (Mask R-CNN's FCN mask head, with
    fewer and narrower convs for small inputs)."""

    def __init__(self, num_classes, channels=64, convs=2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.channels, self.convs = int(num_classes), int(channels), int(convs)
        policy = self.dtype_policy
        self.conv_layers = [layers.Conv2D(self.channels, 3, padding="same", activation="relu", name=f"conv{i + 1}",
                                          dtype=policy) for i in range(self.convs)]
        self.up = layers.Conv2DTranspose(self.channels, 2, strides=2, activation="relu", name="up", dtype=policy)
        self.logits = layers.Conv2D(self.num_classes, 1, name="logits", dtype=policy)

    def build(self, input_shape):
        size, channels = input_shape[2], input_shape[4]
        shape = (None, size, size, channels)
        for conv in self.conv_layers:
            conv.build(shape)
            shape = (None, size, size, self.channels)
        self.up.build(shape)
        self.logits.build((None, 2 * size, 2 * size, self.channels))

    def call(self, crops):
        count, size = crops.shape[1], crops.shape[2]
        x = ops.reshape(crops, (-1, size, size, crops.shape[4]))
        for conv in self.conv_layers:
            x = conv(x)
        x = self.logits(self.up(x))
        return ops.reshape(x, (-1, count, 2 * size, 2 * size, self.num_classes))

    def compute_output_spec(self, crops):
        size = 2 * crops.shape[2]
        return keras.KerasTensor((crops.shape[0], crops.shape[1], size, size, self.num_classes), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "channels": self.channels,
                "convs": self.convs}


@keras.saving.register_keras_serializable(package="convforge")
class SelectMasks(keras.layers.Layer):
    """(mask logits (B, N, M, M, K), classes (B, N) int) -> each detection's own class's mask probabilities
    (B, N, M, M), float32 (a one-hot product: TFLite and ONNX builtins)."""

    receptive_field_passthrough = True

    def call(self, logits, classes):
        k = logits.shape[-1]
        own = ops.one_hot(ops.cast(classes, "int32"), k, dtype="float32")[:, :, None, None, :]
        return ops.sigmoid(ops.sum(ops.cast(logits, "float32") * own, axis=-1))

    def compute_output_spec(self, logits, classes):
        return keras.KerasTensor(tuple(logits.shape[:4]), "float32")


def build(features, num_classes, spec, options, dtype=None):
    """The Mask R-CNN training model's raw output: Faster R-CNN's, then the mask logits of every training proposal
    (R M M K)."""
    parts = two_stage.stages(features, num_classes, spec, options, dtype)
    maps = parts["maps"]
    crops = RoIAlign(options.mask_pool_size, options.sampling_ratio,
                     two_stage.level_sizes(spec) if len(maps) > 1 else None, name="mask_roi_align")(
        maps, parts["proposals"])
    logits = MaskHead(num_classes, options.mask_channels, options.mask_convs, name="mask_head")(crops)
    size = 2 * options.mask_pool_size
    parts["spec"] = {**parts["spec"], "mask_size": size}
    count = parts["spec"]["proposals"]
    flat = layers.Reshape((count * size * size * num_classes,), name="mask_logits_flat")(logits)
    return two_stage.raw_output(HEAD, parts, extra=[flat], head_dtype=dtype)


def unpack_masks(raw, spec):
    """The mask logits (B, R, M, M, K) of a raw output."""
    start, count, size, k = two_stage.raw_size(spec), spec["proposals"], spec["mask_size"], spec["num_classes"]
    return ops.reshape(raw[:, start:start + count * size * size * k], (-1, count, size, size, k))


def mask_targets(masks, boxes, owner, size):
    """(B, R, size, size) 0/1 targets: each box's crop of its owner's mask (masks (B, N, H, W), boxes (B, R, 4)
    normalized yxyx, owner (B, R) an index into N), RoIAlign with 2 x 2 samples per bin, at 0.5."""
    height, width = masks.shape[2], masks.shape[3]
    own = two_stage._gather_rows(ops.reshape(masks, (-1, masks.shape[1], height * width)), owner)
    own = ops.reshape(own, (-1, boxes.shape[1], height, width))
    rows, cols = bin_weights(boxes, height, width, size, 2)
    crop = ops.matmul(ops.matmul(rows, own), ops.transpose(cols, (0, 1, 3, 2)))
    return ops.cast(crop >= 0.5, "float32")


@keras.saving.register_keras_serializable(package="convforge")
class MaskRCNNLoss(two_stage.TwoStageLoss):
    """Faster R-CNN's loss (TwoStageLoss) plus mask_weight x the mask loss (see the module docstring) of up to
    roi_samples x roi_positive_fraction positive proposals per image."""

    def __init__(self, spec, num_classes, mask_weight=1.0, name="mask_rcnn", **kwargs):
        super().__init__(spec, num_classes, name=name, **kwargs)
        self.mask_weight = float(mask_weight)

    def parts(self, y_true, y_pred):
        """TwoStageLoss's parts and "mask" (B,)."""
        p = super().parts(y_true, y_pred)
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        height, width = self.spec["image_size"]
        masks = ops.reshape(y_true[..., 6:], (-1, y_true.shape[1], height, width))
        proposals = two_stage.unpack(y_pred, self.spec)[1]
        logits = unpack_masks(y_pred, self.spec)
        # Only the positives learn masks: gather at most `most` of them per image (static shapes), weighted 0/1.
        most = min(proposals.shape[1], max(1, int(np.ceil(self.roi_samples * self.roi_positive_fraction))))
        positive = ops.cast(p["roi_positive"], "float32")
        weight, chosen = ops.top_k(positive, most)
        boxes = two_stage._gather_rows(proposals, chosen)
        owner = ops.take_along_axis(p["roi_owner"], chosen, axis=1)
        target = mask_targets(masks, boxes, owner, self.spec["mask_size"])
        size, k = self.spec["mask_size"], self.num_classes
        picked = ops.reshape(two_stage._gather_rows(ops.reshape(logits, (-1, logits.shape[1], size * size * k)),
                                                    chosen), (-1, most, size, size, k))
        cls = ops.take_along_axis(p["roi_object_class"], chosen, axis=1)
        own = ops.sum(picked * ops.one_hot(ops.clip(cls, 0, k - 1), k)[:, :, None, None, :], axis=-1)
        per_roi = ops.mean(two_stage._bce(own, target), axis=(2, 3))
        p["mask_rois"] = ops.sum(weight, axis=-1)
        p["mask"] = self.mask_weight * ops.sum(per_roi * weight, axis=-1) / ops.maximum(p["mask_rois"], 1.0)
        return p

    def call(self, y_true, y_pred):
        p = self.parts(y_true, y_pred)
        return p["rpn_objectness"] + p["rpn_box"] + p["roi_class"] + p["roi_box"] + p["mask"]

    def get_config(self):
        return {**super().get_config(), "mask_weight": self.mask_weight}


@keras.saving.register_keras_serializable(package="convforge")
class MaskStageMetric(two_stage.StageMetric):
    """StageMetric of a Mask R-CNN: the stages' losses, the proposals' recall and mask_loss, the mean over positive
    proposals (an image without one adds nothing, so the log does not rise as the RPN starts to find objects)."""

    loss_class = MaskRCNNLoss
    stages = {**two_stage.STAGES, "mask_loss": ("mask",)}
    weights = {**two_stage.StageMetric.weights, "mask_loss": "mask_rois"}


def _loss_settings(options):
    """MaskRCNNLoss's keyword arguments from the head options."""
    return {**two_stage._loss_settings(options), "mask_weight": options.mask_loss_weight}


def loss(spec, num_classes, options):
    """Both stages' losses and the mask loss, summed (MaskRCNNLoss)."""
    return MaskRCNNLoss(spec, num_classes, **_loss_settings(options))


def metrics(spec, num_classes, options):
    """Each stage's loss, the proposals' recall and the mask loss, logged while training."""
    config = {"spec": spec, "num_classes": num_classes, **_loss_settings(options)}
    return [MaskStageMetric(config, name=name) for name in MaskStageMetric.stages]


def outputs(raw, spec, options):
    """Faster R-CNN's detections, then each detection's mask: {boxes, scores, classes, num_detections, masks}."""
    detections = two_stage.outputs(raw, spec, options)
    graph = two_stage._trace(raw, ("mask_roi_align", "mask_head"))
    roi_align, roi_inputs = graph["mask_roi_align"]
    logits = graph["mask_head"][0](roi_align(list(roi_inputs[:-1]), detections["boxes"]))
    return {**detections, "masks": SelectMasks(name="masks")(logits, detections["classes"])}
