"""Two-stage detection: Faster R-CNN (Ren et al., NeurIPS 2015), with an optional feature pyramid (FPN, Lin et al.,
CVPR 2017) and RoIAlign (He et al., Mask R-CNN, ICCV 2017).

Stage 1, the region proposal network (RPN): a 3x3 conv on each read level, then per anchor (layers.anchors
order) an objectness logit and 4 box deltas. Its boxes are decoded, the best `pre_nms_proposals` by objectness
kept, overlapping ones dropped by Fast NMS (below), and the best `train_proposals` (training) or `proposals`
(inference) of the rest are the image's proposals. Stage 2: RoIAlign crops pool_size x pool_size features per
proposal (from its pyramid level with FPN), two fully connected layers, then K + 1 class logits (index 0 is
background) and 4 box deltas per class, relative to the proposal.

Training is approximate joint training: both stages learn from one loss, and proposals are constants to the
second stage (stop_gradient). Proposals are made inside the model, so they cannot include the ground-truth
boxes as Detectron adds them; early on, the RPN's untrained proposals still overlap objects because every
image keeps `train_proposals` of them spread out by NMS, and the RPN learns fast: the `proposal_recall` metric
(the share of objects that some proposal overlaps by roi_positive_iou) tracks it during training.

Fast NMS (Bolya et al., YOLACT, ICCV 2019): a box is dropped when any higher-scored box overlaps it by more than
the threshold, kept or not. It is one IoU matrix and a max, no loop, so the training graph stays keras.ops with
static shapes (any backend, XLA) and the same layer exports; it drops slightly more than greedy NMS, which for
proposals (threshold 0.7, a pool of candidates far larger than needed) changes little.

Sampling: the loss draws, per image, up to `rpn_samples` anchors (at most rpn_positive_fraction positive) and
up to `roi_samples` proposals (at most roi_positive_fraction positive) by random keys the model emits (a layer
with a Keras SeedGenerator, so the random state lives in the model on every backend; evaluation uses fixed
keys).

The training model's raw output is one tensor (B, T) in the RawDetections layer (head "faster_rcnn"), per image
the concatenation of: RPN predictions (A x [4 deltas, objectness]), the proposals (R x 4, yxyx normalized), the
box head's outputs for them (R x [K + 1 logits, 4 K deltas]) and the sampling keys (A + R); the spec holds A
(`anchors`) and R (`proposals`). The inference model (`outputs`) is a second path through the same layers:
inference proposals, RoIAlign, box head, per-class box decoding, NonMaxSuppression.
"""
import math

import keras
import numpy as np
from keras import layers, ops

from convforge import boxes
from convforge.layers.anchors import anchors_of, anchors_per_cell
from convforge.layers.detections import RawDetections
from convforge.layers.nms import NonMaxSuppression
from convforge.layers.roi_align import RoIAlign

HEAD = "faster_rcnn"
# Decoded boxes grow at most this much over their anchor or proposal (Detectron's log(1000 / 16) bound on the
# size deltas), so an untrained RPN cannot overflow exp().
_MAX_LOG_SCALE = math.log(1000.0 / 16)


# ---- the model -----------------------------------------------------------------------------------------------

def feature_pyramid(features, levels, channels):
    """FPN's top-down pathway: {level: P map with `channels` channels} for the levels (finest first)."""
    lateral = {lv: layers.Conv2D(channels, 1, name=f"fpn_{lv}_lateral")(features[lv]) for lv in levels}
    out, above = {}, None
    for lv in reversed(levels):
        x = lateral[lv]
        if above is not None:
            up = layers.UpSampling2D(2, name=f"fpn_{lv}_up")(above)
            extra = (up.shape[1] - x.shape[1], up.shape[2] - x.shape[2])
            if extra != (0, 0):  # an odd-sized level: the coarser map's doubled size overshoots by a cell
                up = layers.Cropping2D(((0, extra[0]), (0, extra[1])), name=f"fpn_{lv}_crop")(up)
            x = layers.Add(name=f"fpn_{lv}_merge")([x, up])
        above = x
        out[lv] = layers.Conv2D(channels, 3, padding="same", name=f"fpn_{lv}_out")(x)
    return {lv: out[lv] for lv in levels}


def rpn_head(features, spec, channels, shared=False):
    """The RPN's predictions (B, A, 5): per anchor 4 box deltas then the objectness logit, in anchor order."""
    per_cell = anchors_per_cell(spec["scales"], spec["aspect_ratios"])
    small = keras.initializers.RandomNormal(stddev=0.01)
    deltas, logits, convs = [], [], {}
    for level in spec["strides"]:
        key = "shared" if shared else level
        if key not in convs:
            tag = "rpn" if shared else f"rpn_{level}"
            convs[key] = (layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"{tag}_conv"),
                          layers.Conv2D(per_cell, 1, kernel_initializer=small, name=f"{tag}_objectness"),
                          layers.Conv2D(per_cell * 4, 1, kernel_initializer=small, name=f"{tag}_deltas"))
        conv, objectness, box = convs[key]
        x = conv(features[level])
        cells = x.shape[1] * x.shape[2] * per_cell
        logits.append(layers.Reshape((cells, 1), name=f"rpn_{level}_objectness_flat")(objectness(x)))
        deltas.append(layers.Reshape((cells, 4), name=f"rpn_{level}_deltas_flat")(box(x)))
    count, expected = sum(t.shape[1] for t in deltas), len(anchors_of(spec))
    if count != expected:
        raise ValueError(f"the feature maps hold {count} anchor positions but the anchor grid {expected}; "
                         f"the levels' strides {spec['strides']} do not fit input {spec['image_size']}")
    return layers.Concatenate(axis=-1, name="rpn_predictions")([_join(deltas, "rpn_all_deltas"),
                                                                 _join(logits, "rpn_all_objectness")])


def _join(tensors, name):
    """Concatenate per-level anchor tensors on the anchor axis (one level passes through)."""
    return layers.Concatenate(axis=1, name=name)(tensors) if len(tensors) > 1 else tensors[0]


def level_sizes(spec):
    """The normalized box side each level's anchors are made for (RoIAlign's level assignment)."""
    height, width = spec["image_size"]
    scale = float(np.exp(np.mean(np.log(spec["scales"]))))
    return [spec["base_sizes"][lv] * scale / math.sqrt(height * width) for lv in spec["strides"]]


def stages(features, num_classes, spec, options, head_dtype=None):
    """Both stages on {level: feature map}: {"rpn", "proposals", "maps" (RoIAlign's inputs), "head", "keys",
    "spec"} (the spec completed with num_classes, anchors and proposals), for a raw output to join."""
    levels = list(spec["strides"])
    if options.fpn:
        features = feature_pyramid(features, levels, options.channels)
    rpn = rpn_head(features, spec, options.channels, shared=options.fpn)
    proposals = Proposals(spec, options.train_proposals, options.pre_nms_proposals, options.proposal_nms_iou,
                          name="proposals", dtype=head_dtype)(rpn)
    maps = [features[lv] for lv in levels]
    pooled = RoIAlign(options.pool_size, options.sampling_ratio, level_sizes(spec) if len(maps) > 1 else None,
                      name="roi_align")(maps, proposals)
    head = BoxHead(num_classes, options.fc_units, name="box_head")(pooled)
    anchors, count = int(rpn.shape[1]), int(proposals.shape[1])
    keys = SamplingKeys(anchors + count, name="sampling_keys", dtype=head_dtype)(rpn)
    spec = {**spec, "num_classes": int(num_classes), "anchors": anchors, "proposals": count}
    return {"rpn": rpn, "proposals": proposals, "maps": maps, "head": head, "keys": keys, "spec": spec}


def raw_output(name, parts, extra=(), head_dtype=None):
    """The raw output (B, T) of `stages`' parts (see the module docstring), then any `extra` flat (B, n) tensors,
    in a RawDetections layer carrying the head's name and spec."""
    spec = parts["spec"]
    anchors, count, k = spec["anchors"], spec["proposals"], spec["num_classes"]
    flat = [layers.Reshape((anchors * 5,), name="rpn_flat")(parts["rpn"]),
            layers.Reshape((count * 4,), name="proposals_flat")(parts["proposals"]),
            layers.Reshape((count * (5 * k + 1),), name="box_head_flat")(parts["head"]), parts["keys"], *extra]
    return RawDetections(name, spec, axis=-1, dtype=head_dtype)(flat)


def faster_rcnn(features, num_classes, spec, options, head_dtype=None):
    """The training model's raw output (B, T) (see the module docstring) from {level: feature map}."""
    return raw_output(HEAD, stages(features, num_classes, spec, options, head_dtype), head_dtype=head_dtype)


def raw_size(spec):
    """The length T of a Faster R-CNN raw output (where a Mask R-CNN's mask logits begin)."""
    anchors, count, k = spec["anchors"], spec["proposals"], spec["num_classes"]
    return anchors * 5 + count * 4 + count * (5 * k + 1) + anchors + count


def unpack(raw, spec):
    """The parts of a raw output (B, T): rpn (B, A, 5), proposals (B, R, 4), head (B, R, 5K + 1), rpn keys
    (B, A) and proposal keys (B, R)."""
    anchors, count, k = spec["anchors"], spec["proposals"], spec["num_classes"]
    sizes = [anchors * 5, count * 4, count * (5 * k + 1), anchors, count]
    ends = np.cumsum(sizes)
    parts = [raw[:, end - size:end] for size, end in zip(sizes, ends)]
    return (ops.reshape(parts[0], (-1, anchors, 5)), ops.reshape(parts[1], (-1, count, 4)),
            ops.reshape(parts[2], (-1, count, 5 * k + 1)), parts[3], parts[4])


def _gather_rows(x, index):
    """x (B, N, D) rows picked per image by index (B, k) -> (B, k, D), as one flat gather (a TFLite GATHER)."""
    n, d = x.shape[1], x.shape[2]
    flat = ops.reshape(x, (-1, d))
    offset = ops.arange(ops.shape(index)[0], dtype="int32")[:, None] * n
    return ops.take(flat, ops.cast(index, "int32") + offset, axis=0)


def _pairwise_iou(a, b):
    """IoU (B, N, M) of boxes a (B, N, 4) and b (B, M, 4), yxyx, in plain broadcast ops (exports anywhere)."""
    a, b = a[:, :, None, :], b[:, None, :, :]
    h = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    w = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = h * w
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / ops.maximum(area_a + area_b - inter, 1e-9)


def decode_boxes(anchors, deltas):
    """Boxes from deltas against anchors or proposals, sizes bounded, clipped to the image."""
    bound = np.float32(_MAX_LOG_SCALE) / np.array(boxes.VARIANCES[2:], "float32")
    deltas = ops.concatenate([deltas[..., :2], ops.minimum(deltas[..., 2:], bound)], axis=-1)
    return ops.clip(boxes.decode(anchors, deltas), 0.0, 1.0)


def fast_nms(sorted_boxes, iou_threshold):
    """Fast NMS over boxes sorted best first (B, N, 4): kept (B, N) bool (see the module docstring)."""
    n = sorted_boxes.shape[1]
    earlier = np.triu(np.ones((n, n), "float32"), 1)  # [i, j] = 1 where box i ranks before box j
    overlap = ops.max(_pairwise_iou(sorted_boxes, sorted_boxes) * earlier, axis=1)
    return overlap <= iou_threshold


@keras.saving.register_keras_serializable(package="convforge")
class Proposals(keras.layers.Layer):
    """RPN predictions (B, A, 5) -> the best `count` proposals (B, count, 4) (normalized yxyx, constants to the
    rest of the model): decoded, the best pre_nms by objectness, Fast NMS at iou_threshold, the best survivors
    (then, when fewer survive, the best suppressed ones)."""

    receptive_field_passthrough = True

    def __init__(self, spec, count=128, pre_nms=600, iou_threshold=0.7, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.anchors = anchors_of(spec)
        self.pre_nms = min(int(pre_nms), len(self.anchors))
        self.count = min(int(count), self.pre_nms)
        self.iou_threshold = float(iou_threshold)

    def call(self, rpn):
        rpn = ops.stop_gradient(ops.cast(rpn, "float32"))
        _, best = ops.top_k(rpn[..., 4], self.pre_nms)  # (B, pre_nms), best first
        candidates = decode_boxes(ops.take(self.anchors, best, axis=0), _gather_rows(rpn[..., :4], best))
        kept = ops.cast(fast_nms(candidates, self.iou_threshold), "float32")
        # Rank the kept before the dropped, each in objectness order (exact, unlike a score offset).
        rank = kept * self.pre_nms + (self.pre_nms - np.arange(self.pre_nms, dtype="float32"))
        _, chosen = ops.top_k(rank, self.count)
        return _gather_rows(candidates, chosen)

    def compute_output_spec(self, rpn):
        return keras.KerasTensor((rpn.shape[0], self.count, 4), "float32")

    def get_config(self):
        return {**super().get_config(), "spec": self.spec, "count": self.count, "pre_nms": self.pre_nms,
                "iou_threshold": self.iou_threshold}


@keras.saving.register_keras_serializable(package="convforge")
class BoxHead(keras.layers.Layer):
    """RoI crops (B, R, P, P, C) -> (B, R, K + 1 + 4 K): two fully connected layers (Faster R-CNN's "2fc" head
    of FPN), then K + 1 class logits and per-class box deltas."""

    def __init__(self, num_classes, fc_units=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.fc_units = int(num_classes), int(fc_units)
        self.fc1 = layers.Dense(self.fc_units, activation="relu", name="fc1", dtype=self.dtype_policy)
        self.fc2 = layers.Dense(self.fc_units, activation="relu", name="fc2", dtype=self.dtype_policy)
        # Detectron's predictor initialization: near-uniform classes, near-zero deltas at the start.
        self.classes = layers.Dense(self.num_classes + 1, name="class_logits", dtype=self.dtype_policy,
                                    kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.deltas = layers.Dense(4 * self.num_classes, name="box_deltas", dtype=self.dtype_policy,
                                   kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        flat = (input_shape[0], input_shape[1], int(np.prod(input_shape[2:])))
        self.fc1.build(flat)
        self.fc2.build(flat[:2] + (self.fc_units,))
        self.classes.build(flat[:2] + (self.fc_units,))
        self.deltas.build(flat[:2] + (self.fc_units,))

    def call(self, crops):
        x = ops.reshape(crops, (-1, crops.shape[1], int(np.prod(crops.shape[2:]))))
        x = self.fc2(self.fc1(x))
        return ops.concatenate([self.classes(x), self.deltas(x)], axis=-1)

    def compute_output_spec(self, crops):
        return keras.KerasTensor((crops.shape[0], crops.shape[1], 5 * self.num_classes + 1), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "fc_units": self.fc_units}


@keras.saving.register_keras_serializable(package="convforge")
class SamplingKeys(keras.layers.Layer):
    """(B, ...) -> (B, size) keys in [0, 1) that rank candidates for the loss's sampling: uniform random while
    training (a SeedGenerator, so the state is the model's on every backend), a fixed spread otherwise."""

    def __init__(self, size, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.size, self.seed = int(size), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, reference, training=None):
        batch = ops.shape(reference)[0]
        if training:
            return keras.random.uniform((batch, self.size), seed=self.seed_generator)
        fixed = np.mod(np.arange(self.size) * 0.6180339887, 1.0).astype("float32")  # golden-ratio spread
        return ops.broadcast_to(ops.convert_to_tensor(fixed)[None], (batch, self.size))

    def compute_output_spec(self, reference):
        return keras.KerasTensor((reference.shape[0], self.size), "float32")

    def get_config(self):
        return {**super().get_config(), "size": self.size, "seed": self.seed}


# ---- the loss --------------------------------------------------------------------------------------------------

def _bce(logits, target):
    """Binary cross-entropy on logits, elementwise."""
    return ops.softplus(logits) - logits * target


def sample(candidates, keys, limit):
    """Up to `limit` (a number or (B, 1)) of the candidates (B, N) bool, those with the smallest keys."""
    masked = ops.where(candidates, keys, 2.0)
    rank = ops.argsort(ops.argsort(masked, axis=-1), axis=-1)
    return ops.logical_and(candidates, ops.cast(rank, "float32") < limit)


@keras.saving.register_keras_serializable(package="convforge")
class TwoStageLoss(keras.losses.Loss):
    """Faster R-CNN's loss on the raw output against padded ground truth y_true (B, M, 6): [ymin, xmin, ymax, xmax,
    class, valid]. RPN: anchors matched (boxes.match: positive from rpn_positive_iou, background under
    rpn_negative_iou, each object's best anchor positive), a sample of rpn_samples per image (at most
    rpn_positive_fraction positive), objectness BCE and smooth L1 of the positives' deltas, both over the sample
    size. RoI head: proposals labelled by their best object (positive from roi_positive_iou, else background),
    a sample of roi_samples (at most roi_positive_fraction positive), softmax cross-entropy over K + 1 and
    smooth L1 of the positives' deltas for their object's class, both over the sample size. The sum of the four
    per image; `parts` returns them apart, with the proposals' recall of the objects."""

    def __init__(self, spec, num_classes, rpn_positive_iou=0.7, rpn_negative_iou=0.3, rpn_samples=256,
                 rpn_positive_fraction=0.5, roi_positive_iou=0.5, roi_samples=128, roi_positive_fraction=0.25,
                 box_weight=1.0, name="faster_rcnn", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec, self.num_classes = spec, int(num_classes)
        self.rpn_positive_iou, self.rpn_negative_iou = float(rpn_positive_iou), float(rpn_negative_iou)
        self.rpn_samples, self.rpn_positive_fraction = int(rpn_samples), float(rpn_positive_fraction)
        self.roi_positive_iou = float(roi_positive_iou)
        self.roi_samples, self.roi_positive_fraction = int(roi_samples), float(roi_positive_fraction)
        self.box_weight = float(box_weight)
        self.anchors = anchors_of(spec)

    def parts(self, y_true, y_pred):
        """Per image (B,): {rpn_objectness, rpn_box, roi_class, roi_box, recall, objects}."""
        y_pred, y_true = ops.cast(y_pred, "float32"), ops.cast(y_true, "float32")
        rpn, proposals, head, rpn_keys, roi_keys = unpack(y_pred, self.spec)
        gt_boxes, gt_classes, valid = y_true[..., :4], y_true[..., 4], y_true[..., 5] > 0.5

        # Stage 1 on anchors.
        index, label = boxes.match(self.anchors, gt_boxes, valid, self.rpn_positive_iou, self.rpn_negative_iou)
        positive = sample(label == 1, rpn_keys, self.rpn_samples * self.rpn_positive_fraction)
        count = ops.sum(ops.cast(positive, "float32"), axis=-1, keepdims=True)
        negative = sample(label == 0, rpn_keys, self.rpn_samples - count)
        chosen = ops.cast(ops.logical_or(positive, negative), "float32")
        size = ops.maximum(ops.sum(chosen, axis=-1), 1.0)
        objectness = ops.sum(_bce(rpn[..., 4], ops.cast(positive, "float32")) * chosen, axis=-1) / size
        matched = ops.take_along_axis(gt_boxes, index[..., None], axis=1)
        rpn_box = ops.sum(ops.sum(boxes.smooth_l1(rpn[..., :4] - boxes.encode(self.anchors, matched)), axis=-1)
                          * ops.cast(positive, "float32"), axis=-1) / size

        # Stage 2 on proposals.
        iou = ops.where(valid[:, None, :], _pairwise_iou(proposals, gt_boxes), -1.0)  # (B, R, M)
        best, owner = ops.max(iou, axis=-1), ops.cast(ops.argmax(iou, axis=-1), "int32")
        is_object = best >= self.roi_positive_iou
        positive = sample(is_object, roi_keys, self.roi_samples * self.roi_positive_fraction)
        count = ops.sum(ops.cast(positive, "float32"), axis=-1, keepdims=True)
        negative = sample(ops.logical_not(is_object), roi_keys, self.roi_samples - count)
        chosen = ops.cast(ops.logical_or(positive, negative), "float32")
        size = ops.maximum(ops.sum(chosen, axis=-1), 1.0)
        cls = ops.cast(ops.take_along_axis(gt_classes, owner, axis=1), "int32")  # (B, R)
        target = ops.where(positive, cls + 1, 0)
        k = self.num_classes
        ce = keras.losses.sparse_categorical_crossentropy(target, head[..., :k + 1], from_logits=True)
        roi_class = ops.sum(ce * chosen, axis=-1) / size
        deltas = ops.reshape(head[..., k + 1:], (-1, proposals.shape[1], k, 4))
        own = ops.take_along_axis(deltas, ops.clip(cls, 0, k - 1)[..., None, None], axis=2)[:, :, 0]
        matched = ops.take_along_axis(gt_boxes, owner[..., None], axis=1)
        roi_box = ops.sum(ops.sum(boxes.smooth_l1(own - boxes.encode(proposals, matched)), axis=-1)
                          * ops.cast(positive, "float32"), axis=-1) / size

        # Recall: objects that some proposal overlaps by roi_positive_iou.
        covered = ops.logical_and(ops.max(iou, axis=1) >= self.roi_positive_iou, valid)
        objects = ops.sum(ops.cast(valid, "float32"), axis=-1)
        recall = ops.sum(ops.cast(covered, "float32"), axis=-1) / ops.maximum(objects, 1.0)
        return {"rpn_objectness": objectness, "rpn_box": self.box_weight * rpn_box, "roi_class": roi_class,
                "roi_box": self.box_weight * roi_box, "recall": recall, "objects": objects,
                # The second stage's assignment, for heads that learn more from the same proposals (masks).
                "roi_positive": positive, "roi_owner": owner, "roi_object_class": cls}

    def call(self, y_true, y_pred):
        p = self.parts(y_true, y_pred)
        return p["rpn_objectness"] + p["rpn_box"] + p["roi_class"] + p["roi_box"]

    def get_config(self):
        return {**super().get_config(), "spec": self.spec, "num_classes": self.num_classes,
                "rpn_positive_iou": self.rpn_positive_iou, "rpn_negative_iou": self.rpn_negative_iou,
                "rpn_samples": self.rpn_samples, "rpn_positive_fraction": self.rpn_positive_fraction,
                "roi_positive_iou": self.roi_positive_iou, "roi_samples": self.roi_samples,
                "roi_positive_fraction": self.roi_positive_fraction, "box_weight": self.box_weight}


# Metric name -> the parts of TwoStageLoss it averages (proposal_recall is weighted by the objects).
STAGES = {"rpn_loss": ("rpn_objectness", "rpn_box"), "roi_loss": ("roi_class", "roi_box"),
          "proposal_recall": ("recall",)}


@keras.saving.register_keras_serializable(package="convforge")
class StageMetric(keras.metrics.Mean):
    """The mean of one stage's loss (rpn_loss, roi_loss) or of the proposals' recall over training batches."""

    loss_class = TwoStageLoss
    stages = STAGES
    # Averages over what a stage is about, not over images: recall over objects (an image without objects has none).
    weights = {"proposal_recall": "objects"}

    def __init__(self, loss_config, name="rpn_loss", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if name not in self.stages:
            raise ValueError(f"unknown stage metric {name!r}; accepted: {', '.join(self.stages)}")
        self.loss_config = dict(loss_config)
        self._loss = self.loss_class(**{k: v for k, v in self.loss_config.items() if k not in ("reduction", "dtype")})

    def update_state(self, y_true, y_pred, sample_weight=None):
        parts = self._loss.parts(y_true, y_pred)
        value = sum(parts[p] for p in self.stages[self.name])
        weight = parts[self.weights[self.name]] if self.name in self.weights else None
        return super().update_state(value, sample_weight=weight)

    def get_config(self):
        return {"loss_config": self.loss_config, "name": self.name, "dtype": self.dtype}


# ---- inference ---------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="convforge")
class DecodeTwoStage(keras.layers.Layer):
    """(proposals (B, P, 4), box head outputs (B, P, K + 1 + 4K)) -> (boxes (B, P K, 4): every proposal's box for
    every class, clipped; scores (B, P K, K): each box scored for its own class only), for per-class NMS."""

    receptive_field_passthrough = True

    def call(self, proposals, head):
        proposals, head = ops.cast(proposals, "float32"), ops.cast(head, "float32")
        count, k = proposals.shape[1], (head.shape[-1] - 1) // 5
        probabilities = ops.softmax(head[..., :k + 1], axis=-1)[..., 1:]  # (B, P, K)
        deltas = ops.reshape(head[..., k + 1:], (-1, count, k, 4))
        decoded = decode_boxes(proposals[:, :, None, :], deltas)  # (B, P, K, 4)
        own = probabilities[..., None] * np.eye(k, dtype="float32")  # (B, P, K, K): box (p, c) scores class c
        return ops.reshape(decoded, (-1, count * k, 4)), ops.reshape(own, (-1, count * k, k))

    def compute_output_spec(self, proposals, head):
        count, k = proposals.shape[1], (head.shape[-1] - 1) // 5
        return (keras.KerasTensor((proposals.shape[0], count * k, 4), "float32"),
                keras.KerasTensor((proposals.shape[0], count * k, k), "float32"))


def _trace(raw, names):
    """{layer name: (layer, its call's input tensors)} for the named layers upstream of a raw output tensor."""
    found, seen, stack = {}, set(), [raw]
    while stack and len(found) < len(names):
        tensor = stack.pop()
        layer, node_index, _ = tensor._keras_history
        if layer is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        inputs = layer._inbound_nodes[node_index].input_tensors
        if layer.name in names:
            found[layer.name] = (layer, inputs)
        stack.extend(inputs)
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"the raw output does not come from a Faster R-CNN head: no layer {', '.join(missing)}")
    return found


def detector_outputs(raw, spec, proposals=100, pre_nms=600, proposal_iou=0.7, max_detections=100, iou_threshold=0.5,
                     score_threshold=0.05):
    """The inference outputs {boxes, scores, classes, num_detections} of a training model's raw output: its RPN,
    RoIAlign and box head again, on `proposals` inference proposals, then per-class decoding and NMS."""
    graph = _trace(raw, ("proposals", "roi_align", "box_head"))
    rpn = graph["proposals"][1][0]
    roi_align, roi_inputs = graph["roi_align"]
    kept = Proposals(spec, proposals, pre_nms, proposal_iou, name="inference_proposals", dtype="float32")(rpn)
    head = graph["box_head"][0](roi_align(list(roi_inputs[:-1]), kept))
    decoded, scores = DecodeTwoStage(name="decode", dtype="float32")(kept, head)
    return NonMaxSuppression(max_detections, iou_threshold, score_threshold, name="detections")(decoded, scores)


# ---- the head interface tasks/detection.py calls -----------------------------------------------------------------

def _loss_settings(options):
    """TwoStageLoss's keyword arguments from the head options."""
    return dict(rpn_positive_iou=options.rpn_positive_iou, rpn_negative_iou=options.rpn_negative_iou,
                rpn_samples=options.rpn_samples, rpn_positive_fraction=options.rpn_positive_fraction,
                roi_positive_iou=options.roi_positive_iou, roi_samples=options.roi_samples,
                roi_positive_fraction=options.roi_positive_fraction, box_weight=options.box_loss_weight)


def build(features, num_classes, spec, options, dtype=None):
    """The Faster R-CNN training model's raw output on the backbone's levels."""
    return faster_rcnn(features, num_classes, spec, options, dtype)


def loss(spec, num_classes, options):
    """Both stages' losses, summed (TwoStageLoss)."""
    return TwoStageLoss(spec, num_classes, **_loss_settings(options))


def metrics(spec, num_classes, options):
    """Each stage's loss and the proposals' recall, logged while training."""
    config = {"spec": spec, "num_classes": num_classes, **_loss_settings(options)}
    return [StageMetric(config, name=name) for name in STAGES]


def outputs(raw, spec, options):
    """Inference proposals, the box head, per-class decoding and NMS: the inference outputs."""
    return detector_outputs(raw, spec, options.proposals, options.pre_nms_proposals, options.proposal_nms_iou,
                            options.max_detections, options.nms_iou, options.score_threshold)
