"""Keypoint heads: heatmaps (Xiao et al.'s Simple Baselines, ECCV 2018) and direct regression, their losses and
their decoding into points.

Keypoints travel as (B, K, 3): x and y normalized to the input (0..1; pixel centres at (j + 0.5) / W) and COCO's
visibility v (0 unlabelled, 1 labelled but occluded, 2 visible). Unlabelled points add nothing to any loss.

Heatmaps: one map per keypoint at `stride` (4) of the input, upsampled from one backbone level by transposed
convolutions (or bilinear resizes + 3x3 convs). The target is rendered inside the loss from the coordinates
(a Gaussian of `sigma` cells at the point's sub-cell position), so augmentations only move points. Simple
Baselines' MSE against it sat on the all-zero maps' plateau for epochs here (3 epochs of the faces recipe at
its loss, 11.7 against 12.3 for zero maps); a softmax over each map's cells with the Gaussian as the target
distribution (cross-entropy) learns from the first step, and its logits, trained towards a Gaussian's log,
decode by the same parabola. Decoding takes
each map's peak and refines it to sub-cell precision by fitting a parabola to the log of the peak and its two
neighbours along each axis: a Gaussian's log is exactly a parabola, so a target map decodes to its point (Zhang
et al.'s DARK, CVPR 2020, with the separable 1-D fit; on the map's edge, from the one neighbour and the known
sigma), and the rule stays one gather per neighbour, which TFLite and ONNX hold. A point's score is its peak's height.

Regression: a 1x1-reduced feature map, flattened (positions kept, as the localization head does), a hidden
layer and (x, y, visibility logit) per keypoint; trained by the Wing loss (Feng et al., CVPR 2018) on the
coordinates in input pixels plus a visibility cross-entropy.
"""
import math

import keras
from keras import layers, ops


def heatmap_head(feature_map, num_keypoints, upsamplings, channels=64, mode="transpose", head_dtype="float32"):
    """(B, h, w, C) -> (B, h * 2^upsamplings, w * 2^upsamplings, K) heatmaps: `upsamplings` x (transposed 4x4
    stride-2 conv, or bilinear x2 + 3x3 conv), each with BN and ReLU, then a 1x1 conv per keypoint."""
    x = feature_map
    for i in range(upsamplings):
        if mode == "transpose":
            x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False,
                                       name=f"keypoint_up{i + 1}")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"keypoint_resize{i + 1}")(x)
            x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"keypoint_up{i + 1}")(x)
        x = layers.BatchNormalization(name=f"keypoint_up{i + 1}_bn")(x)
        x = layers.ReLU(name=f"keypoint_up{i + 1}_relu")(x)
    if not upsamplings:
        x = layers.Conv2D(channels, 3, padding="same", activation="relu", name="keypoint_conv")(x)
    return layers.Conv2D(num_keypoints, 1, dtype=head_dtype, name="heatmaps")(x)


def regression_head(feature_map, num_keypoints, reduce_channels=32, hidden_units=256, head_dtype="float32"):
    """(B, h, w, C) -> (B, K, 3): x, y (normalized, starting at the image centre) and a visibility logit.

    Coordinates and visibility logits come from two layers ("keypoint_xy", "keypoint_visibility") joined only
    for the loss: the inference model decodes the two tensors apart, so a full-int8 export gives each its own
    scale (one shared tensor put the 0..1 coordinates on the logits' coarse int8 steps)."""
    x = layers.Conv2D(reduce_channels, 1, use_bias=False, name="keypoint_reduce")(feature_map)
    x = layers.BatchNormalization(name="keypoint_reduce_bn")(x)
    x = layers.ReLU(name="keypoint_reduce_relu")(x)
    x = layers.Flatten(name="keypoint_flatten")(x)
    x = layers.Dense(hidden_units, activation="relu", name="keypoint_hidden")(x)
    small = keras.initializers.RandomNormal(stddev=1e-3)
    xy = layers.Dense(num_keypoints * 2, dtype=head_dtype, name="keypoint_xy_raw", kernel_initializer=small,
                      bias_initializer=keras.initializers.Constant(0.5))(x)  # at the centre
    visibility = layers.Dense(num_keypoints, dtype=head_dtype, name="keypoint_visibility_raw",
                              kernel_initializer=small, bias_initializer=keras.initializers.Constant(2.0))(x)
    xy = layers.Reshape((num_keypoints, 2), dtype=head_dtype, name="keypoint_xy")(xy)
    visibility = layers.Reshape((num_keypoints, 1), dtype=head_dtype, name="keypoint_visibility")(visibility)
    return layers.Concatenate(dtype=head_dtype, name="keypoints_raw")([xy, visibility])


# ---- heatmap encoding and decoding ------------------------------------------------------------------------

def render_heatmaps(keypoints, height, width, sigma):
    """Gaussian target maps (B, height, width, K) for keypoints (B, K, 3), one peak of 1 per labelled point
    (zeros for unlabelled ones); sigma in heatmap cells. Works on numpy arrays and tensors alike."""
    keypoints = ops.cast(keypoints, "float32")
    cx = keypoints[..., 0] * width - 0.5  # (B, K), in cells
    cy = keypoints[..., 1] * height - 0.5
    xs = ops.arange(width, dtype="float32")
    ys = ops.arange(height, dtype="float32")
    gx = ops.exp(-ops.square(xs[None, None, :] - cx[..., None]) / (2 * sigma ** 2))  # (B, K, W)
    gy = ops.exp(-ops.square(ys[None, None, :] - cy[..., None]) / (2 * sigma ** 2))  # (B, K, H)
    maps = gy[..., :, None] * gx[..., None, :] * ops.cast(keypoints[..., 2] > 0, "float32")[..., None, None]
    return ops.transpose(maps, (0, 2, 3, 1))


def _parabola_offset(left, centre, right):
    """The sub-cell offset of a peak from log heights of it and its neighbours (0 where it is no maximum)."""
    curvature = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / ops.where(curvature < -1e-6, curvature, -1.0)
    return ops.where(curvature < -1e-6, ops.clip(offset, -0.5, 0.5), 0.0)


def _border_offset(inner, centre, sigma, towards):
    """The offset of a peak on the map's edge from its one neighbour, given the Gaussian's width: the log falls
    as (d / sigma)^2 / 2, so the neighbour's deficit fixes where the peak lies (towards: +1 right/down)."""
    return towards * ops.clip(sigma ** 2 * (inner - centre) + 0.5, -0.5, 0.5)


def decode_heatmaps(heatmaps, sigma=None, logits=False):
    """(B, H, W, K) heatmaps -> (keypoints (B, K, 2) normalized x, y; scores (B, K)). Maps are Gaussians'
    heights (scores: the peak's height), or with `logits` log-scores over the cells (scores: the peak's softmax
    probability over that of the target Gaussian's peak). A peak on the map's edge is refined from its one
    neighbour when the Gaussians' sigma (in cells) is given, else not."""
    heatmaps = ops.cast(heatmaps, "float32")
    height, width, k = heatmaps.shape[1], heatmaps.shape[2], heatmaps.shape[3]
    flat = ops.reshape(ops.transpose(heatmaps, (0, 3, 1, 2)), (-1, k, height * width))
    # top_k, not argmax: Keras lowers argmax to TensorFlow with a BitwiseAnd (for -0.0) that TFLite's builtins
    # lack, and a comparison with the max breaks under int8, where the max gets a scale of its own.
    peak, index = ops.top_k(flat, 1)
    peak, index = peak[..., 0], ops.cast(index[..., 0], "int32")  # (B, K)
    row, col = index // width, index % width
    # Log-scores: a Gaussian's log is a parabola, and so are logits trained towards a Gaussian distribution.
    logs = flat if logits else ops.log(ops.maximum(flat, 1e-10))

    def at(i):
        return ops.squeeze(ops.take_along_axis(logs, i[..., None], axis=-1), -1)

    centre = at(index)
    # Neighbours clamped at the borders (where the edge rule below takes over).
    left = at(row * width + ops.maximum(col - 1, 0))
    right = at(row * width + ops.minimum(col + 1, width - 1))
    up = at(ops.maximum(row - 1, 0) * width + col)
    down = at(ops.minimum(row + 1, height - 1) * width + col)

    def offset(low, high, before, after, size):
        inside = _parabola_offset(before, centre, after)
        if sigma is None or size < 2:
            return ops.where(low | high, 0.0, inside)
        inside = ops.where(high, _border_offset(before, centre, sigma, -1.0), inside)
        return ops.where(low, _border_offset(after, centre, sigma, 1.0), inside)

    dx = offset(col == 0, col == width - 1, left, right, width)
    dy = offset(row == 0, row == height - 1, up, down, height)
    x = (ops.cast(col, "float32") + dx + 0.5) / width
    y = (ops.cast(row, "float32") + dy + 0.5) / height
    if logits:
        probability = ops.exp(peak - ops.logsumexp(flat, axis=-1))
        target_peak = 1.0 / (2 * math.pi * (sigma or 1.0) ** 2)
        return ops.stack([x, y], axis=-1), ops.clip(probability / target_peak, 0.0, 1.0)
    return ops.stack([x, y], axis=-1), ops.clip(peak, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="convforge")
class DecodeHeatmaps(layers.Layer):
    """Heatmaps (B, H, W, K) -> {"keypoints": (B, K, 2) normalized x, y, "scores": (B, K)} (decode_heatmaps with
    the targets' sigma)."""

    receptive_field_passthrough = True

    def __init__(self, sigma=None, logits=False, **kwargs):
        super().__init__(**kwargs)
        self.sigma = None if sigma is None else float(sigma)
        self.logits = bool(logits)

    def call(self, heatmaps):
        keypoints, scores = decode_heatmaps(heatmaps, self.sigma, self.logits)
        return {"keypoints": keypoints, "scores": scores}

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "logits": self.logits}

    def compute_output_spec(self, heatmaps):
        b, k = heatmaps.shape[0], heatmaps.shape[-1]
        return {"keypoints": keras.KerasTensor((b, k, 2), "float32"), "scores": keras.KerasTensor((b, k), "float32")}


@keras.saving.register_keras_serializable(package="convforge")
class DecodeRegression(layers.Layer):
    """Regressed (B, K, 3), or its coordinates (B, K, 2) and visibility logits (B, K, 1) as a pair ->
    {"keypoints": (B, K, 2) x, y, "scores": (B, K) the visibility probability}."""

    receptive_field_passthrough = True

    def call(self, raw):
        if isinstance(raw, (list, tuple)):
            xy, visibility = (ops.cast(t, "float32") for t in raw)
        else:
            raw = ops.cast(raw, "float32")
            xy, visibility = raw[..., :2], raw[..., 2:]
        return {"keypoints": xy, "scores": ops.sigmoid(visibility[..., 0])}

    def compute_output_spec(self, raw):
        shape = raw[0].shape if isinstance(raw, (list, tuple)) else raw.shape
        b, k = shape[0], shape[1]
        return {"keypoints": keras.KerasTensor((b, k, 2), "float32"), "scores": keras.KerasTensor((b, k), "float32")}


# ---- losses and metrics -------------------------------------------------------------------------------------

def _labelled(y_true):
    """(B, K) 1.0 where a keypoint is labelled (v > 0), and the per-example count, at least 1."""
    weight = ops.cast(y_true[..., 2] > 0, "float32")
    return weight, ops.maximum(ops.sum(weight, axis=-1), 1.0)


@keras.saving.register_keras_serializable(package="convforge")
class HeatmapLoss(keras.losses.Loss):
    """The heatmaps against Gaussians rendered at the true points, over labelled keypoints only: "mse" (Simple
    Baselines: each map's mean squared error over its cells, x1000) or "cross_entropy" (each map a softmax over
    its cells, against the Gaussian normalized to a distribution: the KL divergence, 0 at the target)."""

    def __init__(self, sigma=1.5, loss="cross_entropy", name="heatmap_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sigma = float(sigma)
        self.loss = loss

    def call(self, y_true, y_pred):
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        target = render_heatmaps(y_true, y_pred.shape[1], y_pred.shape[2], self.sigma)
        if self.loss == "mse":
            # x1000: the maps are mostly zeros, so the plain mean is ~1e-3; scaled, logs read like other losses.
            per_map = 1000.0 * ops.mean(ops.square(y_pred - target), axis=(1, 2))  # (B, K)
        else:
            cells = y_pred.shape[1] * y_pred.shape[2]
            logits = ops.reshape(ops.transpose(y_pred, (0, 3, 1, 2)), (-1, y_pred.shape[3], cells))
            target = ops.reshape(ops.transpose(target, (0, 3, 1, 2)), (-1, y_pred.shape[3], cells))
            target = target / ops.maximum(ops.sum(target, axis=-1, keepdims=True), 1e-9)
            log_p = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
            per_map = ops.sum(target * (ops.log(ops.maximum(target, 1e-12)) - log_p), axis=-1)
        weight, count = _labelled(y_true)
        return ops.sum(per_map * weight, axis=-1) / count

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "loss": self.loss}


def wing(error, width=10.0, curvature=2.0):
    """Feng et al.'s Wing loss of absolute errors: log-shaped below `width` (small errors weigh more than in L1),
    L1 beyond it, continuous at the joint."""
    constant = width - width * math.log(1.0 + width / curvature)
    return ops.where(error < width, width * ops.log(1.0 + error / curvature), error - constant)


@keras.saving.register_keras_serializable(package="convforge")
class RegressionLoss(keras.losses.Loss):
    """Coordinate loss (wing, l1 or l2 of the errors in input pixels) over labelled keypoints, plus
    visibility_weight x the cross-entropy of each labelled point's visibility (v == 2)."""

    def __init__(self, image_size, loss="wing", wing_width=10.0, wing_curvature=2.0, visibility_weight=0.1,
                 name="keypoint_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.image_size = tuple(int(v) for v in image_size)
        self.loss, self.wing_width, self.wing_curvature = loss, float(wing_width), float(wing_curvature)
        self.visibility_weight = float(visibility_weight)

    def call(self, y_true, y_pred):
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        height, width = self.image_size
        scale = ops.convert_to_tensor([width, height], "float32")
        error = ops.abs(y_pred[..., :2] - y_true[..., :2]) * scale  # (B, K, 2) pixels
        if self.loss == "wing":
            per_point = ops.sum(wing(error, self.wing_width, self.wing_curvature), axis=-1)
        elif self.loss == "l1":
            per_point = ops.sum(error, axis=-1)
        else:
            per_point = ops.sum(ops.square(error), axis=-1)
        weight, count = _labelled(y_true)
        coords = ops.sum(per_point * weight, axis=-1) / count
        visible = ops.cast(y_true[..., 2] > 1.5, "float32")
        bce = ops.binary_crossentropy(visible, y_pred[..., 2], from_logits=True)
        return coords + self.visibility_weight * ops.sum(bce * weight, axis=-1) / count

    def get_config(self):
        return {**super().get_config(), "image_size": list(self.image_size), "loss": self.loss,
                "wing_width": self.wing_width, "wing_curvature": self.wing_curvature,
                "visibility_weight": self.visibility_weight}


@keras.saving.register_keras_serializable(package="convforge")
class PointError(keras.metrics.Mean):
    """The mean distance, in input pixels, between decoded and true labelled keypoints (a training log)."""

    def __init__(self, image_size, sigma=None, logits=False, name="point_error", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.image_size = tuple(int(v) for v in image_size)
        self.sigma = None if sigma is None else float(sigma)  # None: regressed points, else heatmaps
        self.logits = bool(logits)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        points = (ops.cast(y_pred, "float32")[..., :2] if self.sigma is None else
                  decode_heatmaps(y_pred, self.sigma, self.logits)[0])
        height, width = self.image_size
        scale = ops.convert_to_tensor([width, height], "float32")
        distance = ops.sqrt(ops.sum(ops.square((points - y_true[..., :2]) * scale), axis=-1))
        weight, _ = _labelled(y_true)
        return super().update_state(distance, sample_weight=weight)

    def get_config(self):
        return {"image_size": list(self.image_size), "sigma": self.sigma, "logits": self.logits, "name": self.name,
                "dtype": self.dtype}
