"""Max-pooling that records where each maximum was, and the unpooling that puts values back there (SegNet,
Badrinarayanan et al., TPAMI 2017; Zeiler and Fergus' switches, ECCV 2014).

Indices follow PyTorch's `MaxPool2d(return_indices=True)`: per image and channel, the flat position y * W + x of
the maximum in the pooled input (H, W), int32. Both layers are plain keras.ops on non-overlapping windows (stride
= pool size, the SegNet case): max-pools, nearest-neighbour repeats, comparisons and selects, so they run on
every backend and convert to TFLite builtins and ONNX, unlike `tf.nn.max_pool_with_argmax` (a TFLite custom op).
"""
import keras
from keras import ops

from convforge.errors import ModelError


def _pool_size(value, name):
    """The window side k of a square k x k pool, or ModelError."""
    size = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(size) != 2 or size[0] != size[1] or int(size[0]) < 1:
        raise ModelError(f"{name}: pool_size={value!r} is not accepted; accepted: an int k >= 1 (a k x k window "
                         f"with stride k)")
    return int(size[0])


def _flat_positions(height, width, row_length):
    """(height, width, 1) int32: each pixel's flat index y * row_length + x."""
    y = ops.arange(height, dtype="int32")[:, None] * row_length
    return (y + ops.arange(width, dtype="int32")[None, :])[:, :, None]


def _spread(x, k):
    """Each pixel of x repeated over a k x k block (nearest-neighbour upsampling by k)."""
    return ops.repeat(ops.repeat(x, k, axis=1), k, axis=2)


@keras.saving.register_keras_serializable(package="convforge")
class MaxPoolWithArgmax(keras.layers.Layer):
    """x (B, H, W, C) -> (max over each k x k window (B, H // k, W // k, C), int32 flat index y * W + x of that
    maximum in x); a remainder row or column that fills no window is dropped, as 'valid' pooling does."""

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pool_size(pool_size, self.name)

    def call(self, x):
        k = self.pool_size
        height, width = x.shape[1], x.shape[2]
        rows, cols = height // k, width // k
        values = ops.max_pool(x[:, :rows * k, :cols * k, :], k, k, padding="valid")
        # argmax's choice is the window's first member equal to the max (ties included): a running minimum over
        # the k*k strided members of where(member == max, its offset i * W + j from the window's corner, k * W),
        # offsets growing in the window's row-major order. The offsets stay int32 (a full-integer TFLite model
        # quantizes float tensors, which would blur them), and every tensor is 4-D.
        offset = None
        for i in range(k):
            for j in range(k):
                member = x[:, i:i + rows * k:k, j:j + cols * k:k, :]
                here = ops.where(ops.equal(member, values), i * width + j, k * width)
                offset = here if offset is None else ops.minimum(offset, here)
        index = _flat_positions(rows, cols, width) * k + offset  # the window's corner, r k W + c k, + offset
        return values, ops.cast(index, "int32")

    def compute_output_spec(self, x):
        k = self.pool_size
        shape = (x.shape[0], x.shape[1] // k, x.shape[2] // k, x.shape[3])
        return keras.KerasTensor(shape, x.dtype), keras.KerasTensor(shape, "int32")

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="convforge")
class MaxUnpool(keras.layers.Layer):
    """[values (B, h, w, C), indices (B, h, w, C) from MaxPoolWithArgmax] -> (B, H, W, C): each value at its
    recorded position, zeros elsewhere. `output_size` (H, W) is the pooled input's size (default (h k, w k));
    an index outside its value's window leaves that window zero."""

    def __init__(self, pool_size=2, output_size=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pool_size(pool_size, self.name)
        self.output_size = None if output_size is None else tuple(int(v) for v in output_size)

    def _size(self, rows, cols):
        """(H, W) of the output, checked against the pooled size."""
        k = self.pool_size
        height, width = self.output_size or (rows * k, cols * k)
        if height // k != rows or width // k != cols:
            raise ModelError(f"{self.name}: output_size {(height, width)} does not pool to the values' "
                             f"{(rows, cols)} with pool_size {k}; accepted: the size of the tensor that was pooled")
        return height, width

    def call(self, inputs):
        values, index = inputs
        k = self.pool_size
        rows, cols = values.shape[1], values.shape[2]
        height, width = self._size(rows, cols)
        # Every value spread over its window and kept only at the pixel whose flat index was recorded: repeats,
        # a comparison and a select (a scatter would be a TFLite custom op). An index outside its own window
        # matches no pixel of it.
        chosen = ops.equal(_spread(ops.cast(index, "int32"), k), _flat_positions(rows * k, cols * k, width))
        spread = _spread(values, k)
        out = ops.where(chosen, spread, ops.zeros_like(spread))
        if (height, width) != (rows * k, cols * k):
            out = ops.pad(out, [[0, 0], [0, height - rows * k], [0, width - cols * k], [0, 0]])
        return out

    def compute_output_spec(self, inputs):
        values = inputs[0]
        height, width = self._size(values.shape[1], values.shape[2])
        return keras.KerasTensor((values.shape[0], height, width, values.shape[3]), values.dtype)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size,
                "output_size": None if self.output_size is None else list(self.output_size)}
