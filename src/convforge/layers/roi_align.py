"""RoIAlign (He et al., Mask R-CNN, ICCV 2017): a fixed-size feature crop per box, without RoIPool's rounding.

Each box is split into pool_size x pool_size bins; each bin averages sampling_ratio x sampling_ratio bilinear
samples placed at the centres of a regular sub-grid (the "aligned" convention: a feature cell's centre is at
half a cell, so a box's continuous coordinates map onto the map without a half-cell shift). Samples beyond the
map's outer cell centres read the border (boxes are clipped to the image, so they stay within half a cell of it).

Two ways to the same numbers (equal to 1e-6, tested against tf.image.crop_and_resize plus average pooling):
- "gather": each sample's 4 neighbouring cells gathered from the flattened map (`keras.ops.take`) and blended
  by the bilinear weights; its cost grows with the samples (4 n^2 rows per box, n = pool_size * sampling_ratio),
  not with the map, so it suits large maps;
- "matmul": bilinear interpolation is separable, and a bin's average of samples is linear, so the crop is
  rows (B, R, P, H) @ map @ columns (B, R, P, W)^T with each bin's averaged tent weights; on small maps this is
  several times faster than the gathers (a 6x6 map, 32 x 128 boxes, P 7, s 2, 64 channels, 2 CPU cores:
  0.6 s against 6 s for a training step's forward and backward pass) and leaves no gather to differentiate.
"auto" picks by a cost estimate. Both are keras.ops with static shapes but the batch: they train on any backend
and export to TFLite with builtin ops only (GATHER or BATCH_MATMUL) and to ONNX.

With several feature maps (a pyramid, finest first) every box is read from one level, the one whose
`level_sizes` entry (the box side, as a fraction of the image, that the level is meant for) is nearest to the
box's in log scale (FPN's assignment rule, Lin et al., CVPR 2017, with the anchors' sizes as canonical sizes).
The gathers read every level from one flattened table; the products give a box zero weights on other levels.
"""
import keras
import numpy as np
from keras import ops

METHODS = ("auto", "gather", "matmul")


@keras.saving.register_keras_serializable(package="convforge")
class RoIAlign(keras.layers.Layer):
    """([feature maps (B, H_l, W_l, C)], boxes (B, R, 4) normalized yxyx) -> (B, R, pool_size, pool_size, C).

    Args:
        pool_size: bins per side of the output crop (7 in Faster R-CNN's box head).
        sampling_ratio: bilinear samples per bin side, averaged (2, as Detectron's default).
        level_sizes: with several maps, the normalized box side each level is meant for (ascending); a box goes
            to the nearest level in log scale. None with one map.
        method: "auto", "gather" or "matmul" (see the module docstring); all give the same crops.

    Examples:
        >>> crops = RoIAlign(pool_size=7)([features], boxes)  # doctest: +SKIP
    """

    receptive_field_passthrough = True

    def __init__(self, pool_size=7, sampling_ratio=2, level_sizes=None, method="auto", **kwargs):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"RoIAlign method {method!r} is unknown; accepted: {', '.join(METHODS)}")
        self.pool_size, self.sampling_ratio, self.method = int(pool_size), int(sampling_ratio), method
        self.level_sizes = None if level_sizes is None else [float(s) for s in level_sizes]
        if self.pool_size < 1 or self.sampling_ratio < 1:
            raise ValueError(f"RoIAlign pool_size={pool_size} and sampling_ratio={sampling_ratio} must be >= 1")

    def call(self, features, boxes):
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        if len(features) > 1 and (self.level_sizes is None or len(self.level_sizes) != len(features)):
            raise ValueError(f"RoIAlign got {len(features)} feature maps but level_sizes={self.level_sizes}; "
                             f"accepted: one normalized box side per map")
        boxes = ops.cast(boxes, "float32")
        level = self._levels(boxes)  # (B, R) int32
        method = self.method if self.method != "auto" else _cheaper(features, self.pool_size, self.sampling_ratio)
        crop = self._gather if method == "gather" else self._matmul
        return crop(features, boxes, level)

    def _samples(self, boxes, height, width):
        """Sample coordinates (B, R, n) along y and x (see `samples`)."""
        return samples(boxes, height, width, self.pool_size * self.sampling_ratio)

    def _gather(self, features, boxes, level):
        """Per sample, its 4 neighbours gathered from the flattened maps of every level (one table)."""
        channels = features[0].shape[-1]
        batch, count = ops.shape(boxes)[0], boxes.shape[1]
        heights = np.array([f.shape[1] for f in features], "float32")
        widths = np.array([f.shape[2] for f in features], "float32")
        starts = np.cumsum([0] + [f.shape[1] * f.shape[2] for f in features])
        table = ops.concatenate([ops.reshape(f, (-1, f.shape[1] * f.shape[2], channels)) for f in features], axis=1)
        table = ops.reshape(table, (-1, channels))  # (B * cells, C): one row per cell of every level and image
        height = ops.take(ops.convert_to_tensor(heights), level)[..., None]  # (B, R, 1)
        width = ops.take(ops.convert_to_tensor(widths), level)[..., None]
        start = ops.take(ops.convert_to_tensor(starts[:-1].astype("int32")), level)  # (B, R)
        start = start + ops.arange(batch, dtype="int32")[:, None] * int(starts[-1])
        ys, xs = self._samples(boxes, height, width)
        y0, y1, wy = _neighbours(ys, height)
        x0, x1, wx = _neighbours(xs, width)
        row0, row1 = y0 * ops.cast(width, "int32"), y1 * ops.cast(width, "int32")
        base = start[..., None, None]
        out = 0.0
        for row, ry in ((row0, 1.0 - wy), (row1, wy)):
            for col, rx in ((x0, 1.0 - wx), (x1, wx)):
                index = base + row[..., :, None] + col[..., None, :]  # (B, R, n, n)
                weight = ry[..., :, None] * rx[..., None, :]
                out = out + ops.take(table, index, axis=0) * ops.cast(weight[..., None], table.dtype)
        # Each bin's mean of its s x s samples, in 3-D steps (LiteRT's XNNPACK refuses a MEAN over a 7-D tensor).
        s, p, n = self.sampling_ratio, self.pool_size, self.pool_size * self.sampling_ratio
        out = ops.mean(ops.reshape(out, (-1, s, n * channels)), axis=1)  # bin rows: (B R P, n C)
        out = ops.mean(ops.reshape(out, (-1, s, channels)), axis=1)  # bin columns: (B R P P, C)
        return ops.reshape(out, (-1, count, p, p, channels))

    def _matmul(self, features, boxes, level):
        """Bilinear sampling and bin averaging as two matrix products per level: bin rows (B, R, P, H) @ the map,
        then bin columns (B, R, P, W); a box's weights are zero on the levels it is not assigned to."""
        count, p, s = boxes.shape[1], self.pool_size, self.sampling_ratio
        out = 0.0
        for index, f in enumerate(features):
            height, width, channels = f.shape[1:]
            rows, cols = bin_weights(boxes, height, width, p, s)  # (B, R, P, H), (B, R, P, W)
            if len(features) > 1:
                rows = rows * ops.cast(level == index, "float32")[..., None, None]
            grid = ops.reshape(f, (-1, 1, height, width * channels))
            across = ops.matmul(ops.cast(rows, f.dtype), grid)  # (B, R, P, W * C)
            across = ops.reshape(across, (-1, count, p, width, channels))
            out = out + ops.matmul(ops.cast(cols, f.dtype)[:, :, None], across)  # (B, R, P, P, C)
        return out

    def _levels(self, boxes):
        """Each box's level index (B, R) int32: how many level boundaries its side exceeds."""
        if not self.level_sizes or len(self.level_sizes) == 1:
            return ops.zeros(ops.shape(boxes)[:2], "int32")
        side_sq = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
        # Compare squared sides with squared geometric midpoints (no log or sqrt in the graph).
        level = 0
        for low, high in zip(self.level_sizes, self.level_sizes[1:]):
            level = level + ops.cast(side_sq > low * high, "int32")
        return level

    def compute_output_spec(self, features, boxes):
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        return keras.KerasTensor((boxes.shape[0], boxes.shape[1], self.pool_size, self.pool_size,
                                  features[0].shape[-1]), features[0].dtype)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "sampling_ratio": self.sampling_ratio,
                "level_sizes": self.level_sizes, "method": self.method}


def samples(boxes, height, width, n):
    """Sample coordinates (B, R, n) along y and x of boxes (B, R, 4) normalized yxyx, in a height x width map's
    cell-centre frame: sample k of n along a box side sits at (k + 0.5) / n of it."""
    steps = (np.arange(n, dtype="float32") + 0.5) / n
    ys = (boxes[..., 0:1] + (boxes[..., 2:3] - boxes[..., 0:1]) * steps) * height - 0.5
    xs = (boxes[..., 1:2] + (boxes[..., 3:4] - boxes[..., 1:2]) * steps) * width - 0.5
    return ys, xs


def bin_weights(boxes, height, width, pool_size, sampling_ratio):
    """RoIAlign as two linear maps: (rows (B, R, P, height), cols (B, R, P, width)) with each bin's averaged
    bilinear weights, so that rows @ map @ cols^T is the (P, P) crop of one channel of a height x width map."""
    ys, xs = samples(boxes, float(height), float(width), pool_size * sampling_ratio)
    return (_bin_weights(ys, height, pool_size, sampling_ratio), _bin_weights(xs, width, pool_size, sampling_ratio))


def _neighbours(coords, size):
    """Bilinear neighbours along one axis: (lower index, upper index) int32 and the upper one's weight, with
    coordinates clamped to the outer cell centres [0, size - 1]."""
    coords = ops.minimum(ops.maximum(coords, 0.0), size - 1.0)
    low = ops.floor(coords)
    high = ops.minimum(low + 1.0, size - 1.0)
    return ops.cast(low, "int32"), ops.cast(high, "int32"), coords - low


def _bin_weights(coords, size, pool_size, sampling_ratio):
    """(B, R, n) sample coordinates -> (B, R, pool_size, size): each bin's average bilinear weight on each cell
    (the tent max(0, 1 - |coordinate - cell|) at coordinates clamped to the outer cell centres)."""
    coords = ops.clip(coords, 0.0, size - 1.0)
    tent = ops.relu(1.0 - ops.abs(coords[..., None] - np.arange(size, dtype="float32")))  # (B, R, n, size)
    tent = ops.reshape(tent, (-1, coords.shape[1], pool_size, sampling_ratio, size))
    return ops.mean(tent, axis=3)


def _cheaper(features, pool_size, sampling_ratio):
    """The faster method for these maps: matrix products cost about P (H W + P W) multiply-adds per box and
    channel on every level, the gathers about 4 n^2 element copies (n = P s), each worth some 8 multiply-adds
    (measured on a CPU)."""
    p, n = pool_size, pool_size * sampling_ratio
    products = sum(p * (f.shape[1] * f.shape[2] + p * f.shape[2]) for f in features)
    return "matmul" if products <= 8 * 4 * n * n else "gather"
