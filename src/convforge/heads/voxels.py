"""The voxel head: one image's backbone features -> a latent vector -> an S^3 occupancy grid (Choy et al.'s
3D-R2N2 decoder without its recurrence, as single-view reconstructions use it), its loss and its metric.

The latent is a dense layer on the globally pooled features; a dense layer unfolds it to a 4^3 grid of
`channels` features, and stride-2 Conv3DTranspose layers (BN and ReLU between them, channels halving) double it to
S^3, the last one emitting one occupancy logit per voxel. Grids are (x, y, z), y up, in the camera's frame
(data.solids, data.sources.binvox). Occupied voxels are a few percent of a grid, so the cross-entropy weighs
them by `positive_weight` (an all-empty grid would otherwise be a good answer).
"""
import math

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="convforge")
class SubvoxelConvTranspose3D(layers.Layer):
    """A 3D transposed convolution with kernel = stride = 2 (each voxel's features -> its 2x2x2 children),
    computed as one matmul and a 3D depth-to-space, the sub-pixel equivalence of Shi et al. (CVPR 2016) in 3D.

    Its output equals keras.layers.Conv3DTranspose(filters, 2, strides=2) with the same weights (tested); it
    exists because TensorFlow's CPU kernels for 3D convolutions are slow to train (a 4^3 -> 8^3 transposed conv
    of 64 -> 32 channels took 1.2 s a step of 32 here, the whole 3D decoder 2.6 s), while this is a matmul and
    three transposes of at most 6 dimensions, which TFLite and ONNX hold."""

    def __init__(self, filters, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.use_bias = int(filters), bool(use_bias)

    def build(self, input_shape):
        # Kernel laid out as Conv3DTranspose's (2, 2, 2, filters, channels), so weights carry over between them.
        self.kernel = self.add_weight(shape=(2, 2, 2, self.filters, input_shape[-1]), name="kernel",
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.filters,), name="bias", initializer="zeros") if self.use_bias else None

    def call(self, x):
        n, f = x.shape[1], self.filters
        # (C, a, b, c, F): column (a, b, c, f) of the matmul is child (a, b, c)'s filter f.
        kernel = ops.reshape(ops.transpose(self.kernel, (4, 0, 1, 2, 3)), (x.shape[-1], 8 * f))
        y = ops.matmul(x, ops.cast(kernel, x.dtype))  # (B, i, j, k, [a, b, c, f])
        # Interleave one axis at a time, every tensor within 6 dimensions: z (c next to k), y, then x.
        y = ops.transpose(ops.reshape(y, (-1, n, n, 4, 2, f)), (0, 1, 2, 4, 3, 5))  # (B i, j, k, c, ab, f)
        y = ops.transpose(ops.reshape(y, (-1, n, 2 * n, 2, 2, f)), (0, 1, 4, 2, 3, 5))  # (B i, j, b, kc, a, f)
        y = ops.transpose(ops.reshape(y, (-1, n, 2 * n, 2 * n, 2, f)), (0, 1, 4, 2, 3, 5))  # (B, i, a, jb, kc, f)
        y = ops.reshape(y, (-1, 2 * n, 2 * n, 2 * n, f))
        return y + ops.cast(self.bias, y.dtype) if self.use_bias else y

    def macs_per_image(self, in_shape, out_shape):
        """Each input voxel's channels into 8 children's filters (what convmath counts)."""
        return math.prod(in_shape) * 8 * self.filters

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], 2 * n, 2 * n, 2 * n, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "use_bias": self.use_bias}


def voxel_head(feature_map, voxel_size=32, latent=128, channels=64, upsampling="subvoxel", head_dtype="float32"):
    """(B, h, w, C) -> (B, S, S, S) occupancy logits (S = voxel_size, a power of 2 from 8): a latent, a 4^3
    grid of `channels` features, doubled to S^3 by transposed 3D convs ("conv_transpose": Keras' 4x4x4,
    stride 2; "subvoxel": kernel = stride = 2 as a matmul, SubvoxelConvTranspose3D), channels halving; the last
    doubling emits the logits."""
    steps = int(math.log2(voxel_size / 4))
    x = layers.GlobalAveragePooling2D(name="voxel_pool")(feature_map)
    x = layers.Dense(latent, activation="relu", name="voxel_latent")(x)
    x = layers.Dense(4 * 4 * 4 * channels, use_bias=False, name="voxel_unfold")(x)
    x = layers.Reshape((4, 4, 4, channels), name="voxel_grid4")(x)
    x = layers.BatchNormalization(name="voxel_grid4_bn")(x)
    x = layers.ReLU(name="voxel_grid4_relu")(x)
    width = channels
    for i in range(steps):
        last = i == steps - 1
        # The last doubling emits the logits itself: a BN and ReLU over S^3 x width features cost a third of a
        # training step at 32^3 (0.51 -> 0.35 s a batch of 32 at 64 px, AMD EPYC AVX2) for no measured gain.
        width = 1 if last else max(8, width // 2)
        name, dtype = ("voxel_logits", head_dtype) if last else (f"voxel_up{i + 1}", None)
        if upsampling == "conv_transpose":
            x = layers.Conv3DTranspose(width, 4, strides=2, padding="same", use_bias=last, dtype=dtype, name=name)(x)
        else:
            x = SubvoxelConvTranspose3D(width, use_bias=last, dtype=dtype, name=name)(x)
        if not last:
            x = layers.BatchNormalization(name=f"{name}_bn")(x)
            x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Reshape((voxel_size,) * 3, dtype=head_dtype, name="occupancy_logits")(x)


@keras.saving.register_keras_serializable(package="convforge")
class VoxelLoss(keras.losses.Loss):
    """Binary cross-entropy of occupancy logits, occupied voxels weighted by positive_weight; per example the
    weighted mean over its voxels."""

    def __init__(self, positive_weight=3.0, name="voxel_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weight = float(positive_weight)

    def call(self, y_true, y_pred):
        y_true, logits = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        bce = ops.binary_crossentropy(y_true, logits, from_logits=True)
        weight = 1.0 + (self.positive_weight - 1.0) * y_true
        return ops.sum(bce * weight, axis=(1, 2, 3)) / ops.sum(weight, axis=(1, 2, 3))

    def get_config(self):
        return {**super().get_config(), "positive_weight": self.positive_weight}


@keras.saving.register_keras_serializable(package="convforge")
class VoxelIoU(keras.metrics.Mean):
    """Mean per-example IoU of the grids thresholded at 0.5 (logit 0) against the truth (a training log)."""

    def __init__(self, name="voxel_iou", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = ops.cast(y_true, "float32") > 0.5
        guess = ops.cast(y_pred, "float32") > 0.0
        both = ops.sum(ops.cast(truth & guess, "float32"), axis=(1, 2, 3))
        either = ops.sum(ops.cast(truth | guess, "float32"), axis=(1, 2, 3))
        return super().update_state(ops.where(either > 0, both / ops.maximum(either, 1.0), 1.0))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="convforge")
class Occupancy(layers.Layer):
    """Occupancy logits -> {"occupancy": (B, S, S, S) probabilities}."""

    receptive_field_passthrough = True

    def call(self, logits):
        return {"occupancy": ops.sigmoid(ops.cast(logits, "float32"))}

    def compute_output_spec(self, logits):
        return {"occupancy": keras.KerasTensor(logits.shape, "float32")}
