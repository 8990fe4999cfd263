"""Hand-made image kernels as a fixed (non-trainable) layer, to set beside the filters a network learns."""
import numpy as np
import keras
from keras import ops

from convforge.errors import ModelError, close_matches

KERNELS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "box_blur": [[1 / 9] * 3] * 3,
    "gaussian_blur": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}


@keras.saving.register_keras_serializable(package="convforge")
class ImageFilter(keras.layers.Layer):
    """Apply fixed 3x3 kernels (names from KERNELS) to every input channel; outputs C * len(kernels) maps."""

    def __init__(self, kernels=("sobel_x", "sobel_y"), **kwargs):
        super().__init__(**kwargs)
        kernels = [kernels] if isinstance(kernels, str) else list(kernels)
        for k in kernels:
            if k not in KERNELS:
                raise ModelError(
                    f"ImageFilter kernel {k!r} is unknown{close_matches(k, KERNELS)}; "
                    f"known kernels: {', '.join(KERNELS)}"
                )
        self.kernels = kernels

    def build(self, input_shape):
        channels = input_shape[-1]
        bank = np.stack([np.asarray(KERNELS[k], "float32") for k in self.kernels], axis=-1)  # 3,3,K
        depthwise = np.repeat(bank[:, :, None, :], channels, axis=2)  # 3,3,C,K
        # A constant, not a weight: hand-made filters must not drift when the rest of a model trains.
        self._kernel = ops.convert_to_tensor(depthwise, dtype=self.compute_dtype)

    def call(self, x):
        return ops.depthwise_conv(x, ops.cast(self._kernel, x.dtype), strides=1, padding="same")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] * len(self.kernels))

    def get_config(self):
        return {**super().get_config(), "kernels": list(self.kernels)}
