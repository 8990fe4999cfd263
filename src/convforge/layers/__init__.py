"""Building blocks shared by the architectures: plain Keras layers and keras.ops, portable across backends
(NonMaxSuppression, a detector's last layer, runs on the TensorFlow backend)."""
from convforge.layers.conv import conv_bn_act, explicit_padding, max_pool
from convforge.layers.dense import dense_block, transition
from convforge.layers.filters import KERNELS, ImageFilter
from convforge.layers.fire import fire_module
from convforge.layers.inception import inception_module, inception_v1_branches
from convforge.layers.anchors import anchor_grid, anchor_spec, anchors_of, anchors_per_cell
from convforge.layers.detections import RawDetections
from convforge.layers.mobile import depthwise_separable, inverted_residual
from convforge.layers.nms import NonMaxSuppression
from convforge.layers.normalization import LocalResponseNormalization
from convforge.layers.residual import residual_block
from convforge.layers.roi_align import RoIAlign
from convforge.layers.se import squeeze_excite
from convforge.layers.style import AdaptiveInstanceNormalization, CaffeInput
from convforge.layers.unpooling import MaxPoolWithArgmax, MaxUnpool

__all__ = [
    "conv_bn_act", "explicit_padding", "max_pool", "dense_block", "transition", "KERNELS", "ImageFilter",
    "fire_module", "inception_module", "inception_v1_branches", "depthwise_separable", "inverted_residual",
    "LocalResponseNormalization", "residual_block", "squeeze_excite", "anchor_grid", "anchor_spec", "anchors_of",
    "anchors_per_cell", "NonMaxSuppression", "RawDetections", "RoIAlign", "MaxPoolWithArgmax", "MaxUnpool",
    "AdaptiveInstanceNormalization", "CaffeInput",
]
