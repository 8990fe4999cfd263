"""Inception modules as data: parallel branches of conv/pool steps concatenated along channels.

One function serves GoogLeNet's module (Szegedy et al. 2015, 1x1 reductions before 3x3/5x5) and all of
Inception v3's (Szegedy et al. 2016: factorized 1x7/7x1 and 1x3/3x1 convs, grid-size reductions). A branch is
a list of steps; a step is one of
    ("conv", filters, kernel, strides, padding)   kernel is an int or (rows, cols)
    ("max" | "avg", pool_size, strides, padding)
    ("split", [conv_step, conv_step, ...])         parallel convs on the branch so far, concatenated
"""
from keras import layers

from convforge.layers.conv import conv_bn_act


def conv(filters, kernel, strides=1, padding="same"):
    """A conv step of an inception branch."""
    return ("conv", filters, kernel, strides, padding)


def pool(kind, pool_size=3, strides=1, padding="same"):
    """A pooling step ('max' or 'avg') of an inception branch."""
    return (kind, pool_size, strides, padding)


def split(*convs):
    """A step that forks the branch into parallel conv steps and concatenates them (Inception v3's 'E')."""
    return ("split", list(convs))


def scaled(filters, width):
    """filters times a width multiplier, at least 1 (width 1.0 is the published network)."""
    return max(1, int(round(filters * width)))


def inception_module(x, branches, *, conv_options, name, width=1.0):
    """Run each branch (a list of steps) on x and concatenate their outputs; returns the module's output.

    width scales every conv's filters (a narrower network with the same layout, like MobileNet's alpha).
    """
    outputs = []
    for b, steps in enumerate(branches):
        y = x
        for s, step in enumerate(steps):
            tag = f"{name}_b{b}_{s}"
            if step[0] == "conv":
                _, filters, kernel, strides, padding = step
                y = conv_bn_act(y, scaled(filters, width), kernel, strides, padding, name=tag, **conv_options)
            elif step[0] in ("max", "avg"):
                kind, pool_size, strides, padding = step
                cls = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
                y = cls(pool_size, strides, padding=padding, name=f"{tag}_{kind}pool")(y)
            elif step[0] == "split":
                parts = [
                    conv_bn_act(y, scaled(f, width), k, st, p, name=f"{tag}_{i}", **conv_options)
                    for i, (_, f, k, st, p) in enumerate(step[1])
                ]
                y = layers.Concatenate(name=f"{tag}_concat")(parts)
            else:
                raise ValueError(f"unknown inception step {step[0]!r} in {name}")
        outputs.append(y)
    return layers.Concatenate(name=name)(outputs)


def inception_v1_branches(b1, b2_reduce, b2, b3_reduce, b3, pool_proj, b3_kernel=5):
    """GoogLeNet's four branches: 1x1 | 1x1->3x3 | 1x1->5x5 (b3_kernel) | 3x3 max-pool->1x1."""
    return [
        [conv(b1, 1)],
        [conv(b2_reduce, 1), conv(b2, 3)],
        [conv(b3_reduce, 1), conv(b3, b3_kernel)],
        [pool("max", 3, 1), conv(pool_proj, 1)],
    ]
