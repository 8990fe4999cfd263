"""Inception v3 (Szegedy et al., CVPR 2016): factorized convolutions and grid-size reduction, as module tables."""
import keras

from convforge.backbones.common import level
from convforge.layers import conv_bn_act, inception_module, max_pool
from convforge.layers.inception import conv, pool, scaled, split


def _module_a(pool_proj):
    """35x35 module: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avg-pool->1x1 (Figure 5, 5x5 kept as Keras has it)."""
    return [[conv(64, 1)], [conv(48, 1), conv(64, 5)], [conv(64, 1), conv(96, 3), conv(96, 3)],
            [pool("avg"), conv(pool_proj, 1)]]


def _module_c(width):
    """17x17 module with 7x7 factorized into 1x7 and 7x1 (Figure 6)."""
    w = width
    return [[conv(192, 1)], [conv(w, 1), conv(w, (1, 7)), conv(192, (7, 1))],
            [conv(w, 1), conv(w, (7, 1)), conv(w, (1, 7)), conv(w, (7, 1)), conv(192, (1, 7))],
            [pool("avg"), conv(192, 1)]]


_MODULE_E = [[conv(320, 1)], [conv(384, 1), split(conv(384, (1, 3)), conv(384, (3, 1)))],
             [conv(448, 1), conv(384, 3), split(conv(384, (1, 3)), conv(384, (3, 1)))],
             [pool("avg"), conv(192, 1)]]
# Grid reductions (Figure 10): strided conv branches next to a strided max-pool.
_REDUCE_B = [[conv(384, 3, 2, "valid")], [conv(64, 1), conv(96, 3), conv(96, 3, 2, "valid")],
             [pool("max", 3, 2, "valid")]]
_REDUCE_D = [[conv(192, 1), conv(320, 3, 2, "valid")],
             [conv(192, 1), conv(192, (1, 7)), conv(192, (7, 1)), conv(192, 3, 2, "valid")],
             [pool("max", 3, 2, "valid")]]
# (module name, branches, level to mark after it)
_LAYOUT = (("mixed0", _module_a(32), None), ("mixed1", _module_a(64), None), ("mixed2", _module_a(64), "C3"),
           ("mixed3", _REDUCE_B, None), ("mixed4", _module_c(128), None), ("mixed5", _module_c(160), None),
           ("mixed6", _module_c(160), None), ("mixed7", _module_c(192), "C4"), ("mixed8", _REDUCE_D, None),
           ("mixed9", _MODULE_E, None), ("mixed10", _MODULE_E, "C5"))


def build_inception_v3(input_shape=(299, 299, 3), width=1.0, name="inception_v3"):
    """Inception v3 in keras.applications' layout (convs without bias, BN without scale, eps 1e-3).

    width multiplies every conv's filters (1.0: the paper's).

    Levels: C1 after the third stem conv (stride 2), C2 after the 192-filter conv (4), C3 mixed2 (8),
    C4 mixed7 (16), C5 mixed10 (32).
    """
    opts = dict(bn_scale=False, bn_epsilon=1e-3)
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, scaled(32, width), 3, 2, "valid", name="stem1", **opts)
    x = conv_bn_act(x, scaled(32, width), 3, 1, "valid", name="stem2", **opts)
    x = conv_bn_act(x, scaled(64, width), 3, 1, "same", name="stem3", **opts)
    x = level(x, "C1")
    x = max_pool(x, 3, 2, "valid", name="stem_pool1")
    x = conv_bn_act(x, scaled(80, width), 1, 1, "valid", name="stem4", **opts)
    x = conv_bn_act(x, scaled(192, width), 3, 1, "valid", name="stem5", **opts)
    x = level(x, "C2")
    x = max_pool(x, 3, 2, "valid", name="stem_pool2")
    for module_name, branches, mark in _LAYOUT:
        x = inception_module(x, branches, conv_options=opts, name=module_name, width=width)
        if mark:
            x = level(x, mark)
    return keras.Model(inputs, x, name=name)
