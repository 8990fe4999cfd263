"""Local response normalization across channels, as in AlexNet (Krizhevsky et al. 2012, section 3.3)."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="convforge")
class LocalResponseNormalization(keras.layers.Layer):
    """b = a / (k + alpha * sum of a^2 over `depth` neighbouring channels)^beta, the paper's form (not Caffe's alpha/n)."""

    receptive_field_passthrough = True

    def __init__(self, depth=5, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth, self.bias, self.alpha, self.beta = depth, bias, alpha, beta

    def call(self, x):
        half = self.depth // 2
        sq = ops.square(x)
        padded = ops.pad(sq, [[0, 0], [0, 0], [0, 0], [half, self.depth - 1 - half]])
        channels = ops.shape(x)[-1]
        # A sum of shifted slices keeps this to plain keras.ops, so it runs and exports on every backend.
        window = sum(padded[..., i : i + channels] for i in range(self.depth))
        return x / ops.power(self.bias + self.alpha * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth": self.depth, "bias": self.bias, "alpha": self.alpha,
                "beta": self.beta}
