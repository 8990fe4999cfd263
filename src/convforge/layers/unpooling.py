"""Max-pooling that records where each maximum was, and the unpooling that puts values back there (SegNet,
Badrinarayanan et al., TPAMI 2017; Zeiler and Fergus' switches, ECCV 2014).

Indices follow PyTorch's `MaxPool2d(return_indices=True)`: per image and channel, the flat position y * W + x of
the maximum in the pooled input (H, W), int32. Both layers are plain keras.ops on non-overlapping windows (stride
= pool size, the SegNet case): strided slices, a max over the k x k window members and the first member equal to
it, comparisons and interleaving reshapes, so they run on every backend and convert to TFLite builtins and ONNX,
unlike `tf.nn.max_pool_with_argmax` (a TFLite custom op).
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


def _cell_origins(rows, cols, k, width):
    """(rows, cols, 1) int32: the flat index y * width + x of each window's top-left input pixel."""
    y = ops.arange(rows, dtype="int32")[:, None] * k
    x = ops.arange(cols, dtype="int32")[None, :] * k
    return (y * width + x)[:, :, None]


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
        # The k*k members of every window, window position i*k + j last: (B, rows, cols, C, k*k).
        members = ops.stack([x[:, i:i + rows * k:k, j:j + cols * k:k, :] for i in range(k) for j in range(k)], -1)
        values = ops.max(members, axis=-1)
        # The first window member equal to the max (argmax's choice): keras.ops.argmax adds a BitwiseAnd on the
        # TensorFlow backend, which TFLite builtins cannot hold.
        positions = ops.arange(k * k, dtype="int32")
        local = ops.min(ops.where(ops.equal(members, values[..., None]), positions, k * k), axis=-1)
        index = _cell_origins(rows, cols, k, width) + (local // k) * width + local % k
        return values, index

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
        offset = ops.cast(index, "int32") - _cell_origins(rows, cols, k, width)
        row, col = offset // width, offset % width
        inside = ops.logical_and(ops.logical_and(row >= 0, row < k), col < k)
        local = ops.where(inside, row * k + col, -1)  # position inside the window, i * k + j
        zeros = ops.zeros_like(values)
        planes = [ops.where(ops.equal(local, p), values, zeros) for p in range(k * k)]
        # Interleave the k*k planes back into the k x k windows: row i of every window, then the window rows.
        channels = values.shape[3]
        window_rows = [ops.reshape(ops.stack(planes[i * k:(i + 1) * k], axis=3), (-1, rows, cols * k, channels))
                       for i in range(k)]
        out = ops.reshape(ops.stack(window_rows, axis=2), (-1, rows * k, cols * k, channels))
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
