"""Filter arithmetic for CNNs: output sizes, receptive fields, MACs and parameter counts.

Everything here is plain Python. Keras models are read by duck typing (class names,
``get_config()``, tensor ``.shape``, ``count_params()`` and the functional graph held in
``tensor._keras_history`` / ``operation._inbound_nodes[i]``), so importing this module never
pulls in TensorFlow or Keras and the numbers can be checked without a backend.

Receptive fields follow Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
Neural Networks" (Distill, 2019).  Per spatial axis, a layer with effective kernel
``k_eff = d*(k-1) + 1``, stride ``s`` and padding ``p`` (before the first pixel) maps

    r_out     = r_in + (k_eff - 1) * j_in
    j_out     = j_in * s
    start_out = start_in + ((k_eff - 1) / 2 - p) * j_in

where ``r`` is the field size in input pixels, ``j`` the distance in input pixels between
two neighbouring units (the "jump") and ``start`` the centre of unit 0's field.

Conventions:
* 2-D layers only (Conv1D/Conv3D and friends are not followed, but their MACs are counted).
* Spatial axes come from each layer's ``data_format``; tensors that no layer describes are
  read as channels_last unless the model's first layer with a ``data_format`` says otherwise.
* For a model with several image inputs, all fields are in the pixel coordinates shared by
  those inputs and a global field has the size of the first one.
* A layer called several times (shared weights) is reported at its first call in the graph.
* MACs count multiply-accumulates of convolutions and dense layers only; normalization,
  activations, pooling, merges and bias additions count 0, the convention behind the MAC
  ("FLOPs") figures published for torchvision models and in the papers.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from fractions import Fraction

from .errors import ConvforgeError

__all__ = [
    "ReceptiveField",
    "same_padding",
    "conv_output_size",
    "conv_transpose_output_size",
    "pool_output_size",
    "receptive_fields",
    "layer_table",
    "layer_macs",
    "count_macs",
    "count_params",
    "format_table",
    "SUPPORTED_LAYER_TYPES",
]


# --------------------------------------------------------------------------------------
# Output-size arithmetic
# --------------------------------------------------------------------------------------

def _check_positive(**values):
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConvforgeError(f"{name} must be a positive integer, got {value!r}")


def _padding_pair(padding, name="padding"):
    """Normalize an int or (before, after) padding to a pair of non-negative ints."""
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ConvforgeError(f"{name} must be an int or a (before, after) pair, got {padding!r}")
        before, after = padding
    else:
        before = after = padding
    for value in (before, after):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConvforgeError(f"{name} must be non-negative integers, got {padding!r}")
    return before, after


def _padding_mode(padding):
    """Return 'same'/'valid' for Keras padding strings, or None for numeric padding."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in ("same", "valid"):
            raise ConvforgeError(f"padding must be 'same', 'valid', an int or a (before, after) pair, got {padding!r}")
        return mode
    return None


def same_padding(size, kernel, stride=1, dilation=1):
    """Return the (before, after) zero padding TensorFlow/Keras 'same' adds along one axis."""
    _check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    k_eff = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    # TF puts the odd pixel after the image, unlike the symmetric guess k//2.
    return total // 2, total - total // 2


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Return the output length of a convolution along one axis."""
    _check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    mode = _padding_mode(padding)
    if mode == "same":
        before, after = same_padding(size, kernel, stride, dilation)
    elif mode == "valid":
        before = after = 0
    else:
        before, after = _padding_pair(padding)
    k_eff = dilation * (kernel - 1) + 1
    span = size + before + after - k_eff
    out = span // stride + 1 if span >= 0 else 0
    if out < 1:
        raise ConvforgeError(
            f"a convolution with kernel {kernel}, stride {stride}, padding {padding!r} and "
            f"dilation {dilation} (effective kernel {k_eff}) does not fit an input of size {size}"
        )
    return out


def conv_transpose_output_size(size, kernel, stride=1, padding=0, output_padding=None, dilation=1):
    """Return the output length of a transposed convolution along one axis (PyTorch ints, Keras strings)."""
    # Numeric padding follows PyTorch: (size-1)*stride - before - after + k_eff + output_padding.
    # 'same'/'valid' follow Keras, whose output_padding defaults to None: 'same' gives
    # size*stride, 'valid' size*stride + max(k_eff - stride, 0); an explicit output_padding
    # gives (size-1)*stride + k_eff % 2 + output_padding ('same') or (size-1)*stride + k_eff +
    # output_padding ('valid'). Sizes Keras declares but TensorFlow cannot compute raise.
    _check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    if output_padding is not None and (
        isinstance(output_padding, bool) or not isinstance(output_padding, int) or output_padding < 0
    ):
        raise ConvforgeError(f"output_padding must be a non-negative integer, got {output_padding!r}")
    k_eff = dilation * (kernel - 1) + 1
    mode = _padding_mode(padding)
    if mode is not None and output_padding is not None and output_padding >= stride:
        raise ConvforgeError(f"output_padding {output_padding} must be smaller than the stride {stride} (Keras rule)")
    if mode == "valid":
        out = (size - 1) * stride + (max(k_eff, stride) if output_padding is None else k_eff + output_padding)
    elif mode == "same":
        out = size * stride if output_padding is None else (size - 1) * stride + k_eff % 2 + output_padding
        # TF runs this as the gradient of a 'same' conv, which must map out back to size.
        if out >= 1 and -(-out // stride) != size:
            raise ConvforgeError(
                f"Keras declares size {out} for a 'same' transposed convolution with kernel {kernel}, stride "
                f"{stride} and output_padding {output_padding} on size {size}, but TensorFlow cannot compute it "
                "(an even effective kernel needs output_padding >= 1)"
            )
    else:
        before, after = _padding_pair(padding)
        extra = output_padding or 0
        # PyTorch refuses output_padding that would add rows no kernel tap can reach.
        if extra >= max(stride, dilation):
            raise ConvforgeError(
                f"output_padding {extra} must be smaller than the stride {stride} or the dilation {dilation}"
            )
        out = (size - 1) * stride - before - after + k_eff + extra
    if out < 1:
        raise ConvforgeError(
            f"a transposed convolution with kernel {kernel}, stride {stride}, padding {padding!r}, "
            f"output_padding {output_padding!r} and dilation {dilation} gives no output for size {size}"
        )
    return out


def pool_output_size(size, pool, stride=None, padding=0, ceil_mode=False):
    """Return the output length of a pooling window along one axis (ceil_mode as in PyTorch)."""
    stride = pool if stride is None else stride
    _check_positive(size=size, pool=pool, stride=stride)
    mode = _padding_mode(padding)
    if mode == "same":
        if ceil_mode:
            raise ConvforgeError("ceil_mode has no meaning with padding='same' (Keras already rounds up)")
        return -(-size // stride)
    before, after = (0, 0) if mode == "valid" else _padding_pair(padding)
    span = size + before + after - pool
    if span < 0:
        raise ConvforgeError(
            f"a pooling window of {pool} with stride {stride} and padding {padding!r} does not fit an input of size {size}"
        )
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # PyTorch drops a rounded-up window that would start in the right padding only.
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1
    return out


# --------------------------------------------------------------------------------------
# Receptive fields
# --------------------------------------------------------------------------------------

def _plain(value):
    """Return an int when a Fraction/float is integral, else a float."""
    if value is None:
        return None
    value = Fraction(value)
    return int(value) if value.denominator == 1 else float(value)


@dataclass(frozen=True)
class ReceptiveField:
    """The patch of input pixels that one unit of a layer's output can see.

    ``size``  (rows, cols) of the field in input pixels; for a global field, the input's (H, W).
    ``jump``  (rows, cols) distance in input pixels between neighbouring units (effective
              stride); fractional after upsampling or transposed convolution; None if global.
    ``start`` centre of unit (0, 0)'s field in input pixel coordinates (pixel i has centre i;
              negative means centred in the padding); None if global.
    ``is_global``      every unit sees the whole input (after Flatten, global pooling, ...).
    ``global_context`` a local unit that is also modulated by a global signal (e.g. a
                       squeeze-and-excitation gate); size/jump/start describe the local part.

    Fields are geometric, as in the Distill article: zeros added by padding are counted as
    part of a field, so a unit whose branch reads only inserted padding is still credited
    with that branch's box.  Fields after UpSampling2D or Conv2DTranspose are approximate.
    """

    size: tuple[int, int]
    jump: tuple[int, int] | None = None
    start: tuple[float, float] | None = None
    is_global: bool = False
    global_context: bool = False

    def center(self, i, j):
        """Return the (row, col) centre in input pixels of unit (i, j)'s field."""
        if self.is_global:
            return tuple(_plain(Fraction(s - 1) / 2) if s else None for s in self.size)
        return (_plain(Fraction(self.start[0]) + i * Fraction(self.jump[0])),
                _plain(Fraction(self.start[1]) + j * Fraction(self.jump[1])))

    def box(self, i, j):
        """Return unit (i, j)'s field as inclusive (top, left, bottom, right) pixel indices, unclipped."""
        if self.is_global:
            return (0, 0, self.size[0] - 1, self.size[1] - 1)
        row, col = (Fraction(c) for c in self.center(i, j))
        half_r, half_c = Fraction(self.size[0] - 1, 2), Fraction(self.size[1] - 1, 2)
        return (_plain(row - half_r), _plain(col - half_c), _plain(row + half_r), _plain(col + half_c))

    def clipped_box(self, i, j, height, width):
        """Return box(i, j) clipped to a height x width image, or None if it misses the image."""
        top, left, bottom, right = self.box(i, j)
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, height - 1), min(right, width - 1)
        if top > bottom or left > right:
            return None
        return (top, left, bottom, right)


# Internal field: exact Fractions so that strides and half-pixel centres never drift.
_Field = namedtuple("_Field", "size jump start is_global global_context")
# State of one tensor: field (None = unknown), spatial (H, W) or None, and why it is unknown.
_State = namedtuple("_State", "field hw reason")


class _Unfollowable(Exception):
    """Raised by a rule when a layer's effect on the field cannot be described."""


def _identity_field():
    return _Field((Fraction(1), Fraction(1)), (Fraction(1), Fraction(1)), (Fraction(0), Fraction(0)), False, False)


def _global_field(image_hw):
    return _Field(tuple(image_hw) if image_hw else (None, None), None, None, True, False)


def _public(field):
    if field is None:
        return None
    if field.is_global:
        return ReceptiveField(size=tuple(field.size), is_global=True)
    return ReceptiveField(
        # Fractional sizes only arise after upsampling; round up to whole pixels.
        size=tuple(int(math.ceil(s)) for s in field.size),
        jump=tuple(_plain(j) for j in field.jump),
        start=tuple(float(s) for s in field.start),
        is_global=False,
        global_context=field.global_context,
    )


def _window(field, k_eff, stride, pad_before):
    """Apply the Distill recurrence for a sliding window on both axes."""
    size, jump, start = [], [], []
    for a in range(2):
        j = field.jump[a]
        size.append(field.size[a] + (k_eff[a] - 1) * j)
        start.append(field.start[a] + (Fraction(k_eff[a] - 1, 2) - pad_before[a]) * j)
        jump.append(j * stride[a])
    return field._replace(size=tuple(size), jump=tuple(jump), start=tuple(start))


def _shift(field, offset):
    """Move unit 0 by ``offset`` units of the current grid (negative: into added padding)."""
    return field._replace(start=tuple(field.start[a] + offset[a] * field.jump[a] for a in range(2)))


# Layers whose output pixel (i, j) depends only on input pixel (i, j).  Data-augmentation
# layers are identities at inference, which is when a receptive field is meaningful.
PASSTHROUGH_TYPES = frozenset({
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "RMSNormalization", "SyncBatchNormalization",
    "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity", "Rescaling", "Normalization", "Masking",
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
    "RandomBrightness", "RandomCrop", "RandomHue", "RandomSaturation", "RandomGrayscale",
    "RandomColorJitter", "RandomSharpness", "RandomShear", "RandomPosterization",
    "RandomInvert", "RandomColorDegeneration", "RandomErasing", "RandomGaussianBlur",
    "RandomPerspective", "RandomElasticTransform", "Solarization", "AutoContrast", "Equalization",
    "MixUp", "CutMix", "AugMix", "RandAugment",
    # keras.ops elementwise operations that show up in functional graphs.
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Swish", "HardSwish", "Gelu",
    "Elu", "Selu", "Celu", "LeakyRelu", "Softplus", "Softsign", "Tanh", "Mish", "LogSigmoid",
    "Abs", "Absolute", "Negative", "Square", "Sqrt", "Exp", "Log", "Clip", "Cast", "Reciprocal",
    "Power", "Erf", "Rsqrt", "Sign", "Round", "Floor", "Ceil",
})
_CONV_TYPES = frozenset({"Conv2D", "DepthwiseConv2D", "SeparableConv2D"})
_POOL_TYPES = frozenset({"MaxPooling2D", "AveragePooling2D"})
_GLOBAL_TYPES = frozenset({
    "Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
})
_ADAPTIVE_TYPES = frozenset({"AdaptiveAveragePooling2D", "AdaptiveMaxPooling2D"})
_MERGE_TYPES = frozenset({
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Divide", "TrueDivide",
})
SUPPORTED_LAYER_TYPES = tuple(sorted(
    {"InputLayer", "Conv2DTranspose", "ZeroPadding2D", "Cropping2D", "UpSampling2D",
     "Dense", "Reshape", "Resizing", "CenterCrop", "Functional", "Sequential"}
    | PASSTHROUGH_TYPES | _CONV_TYPES | _POOL_TYPES | _GLOBAL_TYPES | _ADAPTIVE_TYPES | _MERGE_TYPES
))
_KNOWN_TYPES = frozenset(SUPPORTED_LAYER_TYPES)


def _kind(op):
    """Return the first class name in op's MRO that convmath knows, so subclasses are followed; a layer that
    declares `pixelwise = True` (a per-pixel map of its input, such as a colour conversion) passes fields on."""
    if getattr(op, "pixelwise", False):
        return "Identity"
    for cls in type(op).__mro__:
        if cls.__name__ in _KNOWN_TYPES and cls.__name__ not in ("Functional", "Sequential"):
            return cls.__name__
    return type(op).__name__


def _config(op):
    try:
        return op.get_config() or {}
    except Exception:  # Bare keras.ops operations may not serialize their arguments.
        return {}


def _pair(value):
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return tuple(value)


def _shape(tensor):
    try:
        return tuple(None if d is None else int(d) for d in tensor.shape)
    except (AttributeError, TypeError):
        return None


def _static_hw(tensor, data_format):
    shape = _shape(tensor)
    if shape is None or len(shape) != 4:
        return None
    hw = shape[2:4] if data_format == "channels_first" else shape[1:3]
    return hw if None not in hw else None


def _is_image(tensor):
    shape = _shape(tensor)
    return shape is not None and len(shape) == 4


def _graph_io(op):
    """Return (inputs, outputs) of a nested functional/sequential model, or None for other ops."""
    if not hasattr(op, "layers"):
        return None
    try:
        inputs, outputs = list(op.inputs), list(op.outputs)
    except Exception:  # Subclassed or unbuilt models have no graph to walk.
        return None
    if not inputs or not outputs or not all(hasattr(t, "_keras_history") for t in inputs + outputs):
        return None
    return inputs, outputs


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    return history.operation._inbound_nodes[history.node_index]


def _topological_nodes(inputs, outputs):
    """Return the graph's nodes between inputs and outputs, each after all its parents."""
    stop = {id(t) for t in inputs}
    order, done = [], set()

    def parent(t):
        return None if id(t) in stop else _producer(t)

    # Iterative DFS: Keras graphs can be deeper than Python's recursion limit.
    stack = [(n, False) for n in reversed([parent(t) for t in outputs]) if n is not None]
    while stack:
        node, expanded = stack.pop()
        if id(node) in done:
            continue
        if expanded:
            done.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        for t in reversed(list(node.input_tensors)):
            p = parent(t)
            if p is not None and id(p) not in done:
                stack.append((p, False))
    return order


# One reported layer: name, the layer, its first node in this graph (None for inputs),
# its output State, MACs of that call (None if unknown) and nesting depth.
_Record = namedtuple("_Record", "name layer node state macs depth")


class _Walker:
    """Walks a functional graph once, computing every tensor's field, size and MACs."""

    def __init__(self, strict):
        self.strict = strict
        self.image_hw = None
        self.data_format = "channels_last"
        self.total_macs = 0
        self.macs_problem = None

    # -- graph traversal ---------------------------------------------------------------
    def run_top(self, model):
        io = _graph_io(model)
        if io is None:
            raise ConvforgeError(
                f"model {getattr(model, 'name', model)!r} ({type(model).__name__}) has no functional graph "
                "to walk; build it with keras.Input (a subclassed model cannot be analysed)"
            )
        inputs, _ = io
        for layer in getattr(model, "layers", []):
            fmt = _config(layer).get("data_format")
            if fmt in ("channels_first", "channels_last"):
                self.data_format = fmt
                break
        seeds = []
        for t in inputs:
            hw = _static_hw(t, self.data_format)
            if _is_image(t):
                if self.image_hw is None:
                    self.image_hw = hw
                seeds.append(_State(_identity_field(), hw, None))
            else:
                seeds.append(None)
        # Non-image inputs carry no pixel layout: anything they feed depends on them globally.
        seeds = [s if s is not None else _State(_global_field(self.image_hw), None, None) for s in seeds]
        records, _, macs = self.run_graph(model, seeds, prefix="", depth=0)
        self.total_macs = macs
        return records

    def run_graph(self, model, seeds, prefix, depth):
        inputs, outputs = _graph_io(model)
        states = {id(t): s for t, s in zip(inputs, seeds)}
        first = {}
        total_macs = 0
        for node in _topological_nodes(inputs, outputs):
            op = node.operation
            in_tensors = list(node.input_tensors)
            in_states = [states.get(id(t), _State(None, None, "disconnected input")) for t in in_tensors]
            nested_records = None
            io = _graph_io(op)
            if io is not None:
                inner_seeds = in_states if len(in_states) == len(io[0]) else [
                    _State(None, None, "inputs do not match the nested model's inputs")] * len(io[0])
                nested_records, out_states, macs = self.run_graph(
                    op, inner_seeds, prefix + op.name + "/", depth + 1)
                if len(out_states) != len(node.outputs):
                    out_states = [out_states[0]] * len(node.outputs)
            else:
                out_states = [self.propagate(op, in_states, in_tensors, t, prefix) for t in node.outputs]
                macs = self.node_macs(op, in_tensors, in_states, node.outputs, out_states, prefix)
            for t, s in zip(node.outputs, out_states):
                states[id(t)] = s
            if macs is None:
                total_macs = None
            elif total_macs is not None:
                total_macs += macs
            if id(op) not in first:
                first[id(op)] = (node, out_states[0] if out_states else _State(None, None, "no output"),
                                 macs, nested_records)

        records = []
        layers = []
        seen = set()
        # Sequential models leave their InputLayer out of .layers; report it anyway.
        for t in inputs:
            op = t._keras_history.operation
            if op is not None and id(op) not in seen and not any(op is l for l in model.layers):
                layers.append(op)
                seen.add(id(op))
        for layer in model.layers:
            if id(layer) not in seen:
                layers.append(layer)
                seen.add(id(layer))
        input_state = {id(t._keras_history.operation): states[id(t)] for t in inputs
                       if t._keras_history.operation is not None}
        for layer in layers:
            name = prefix + layer.name
            if id(layer) in first:
                node, state, macs, nested = first[id(layer)]
                records.append(_Record(name, layer, node, state, macs, depth))
                records.extend(nested or [])
            elif id(layer) in input_state:
                records.append(_Record(name, layer, None, input_state[id(layer)], 0, depth))
            else:
                records.append(_Record(name, layer, None, _State(None, None, "not connected to the outputs"),
                                       None, depth))
        out_states = [states.get(id(t), _State(None, None, "not reached")) for t in outputs]
        return records, out_states, total_macs

    # -- receptive-field rules -----------------------------------------------------------
    def propagate(self, op, in_states, in_tensors, out_tensor, prefix):
        kind = _kind(op)
        fmt = _config(op).get("data_format") or self.data_format
        static = _static_hw(out_tensor, fmt) if _is_image(out_tensor) else None
        fields = [s.field for s in in_states]
        if any(f is None for f in fields):
            # Upstream already unknown: nothing to add, and strict mode has raised there.
            reason = next(s.reason for s in in_states if s.field is None)
            return _State(None, static, reason)
        if fields and all(f.is_global for f in fields):
            # A function of values that each see the whole input sees the whole input.
            return _State(_global_field(self.image_hw), static, None)
        try:
            field, hw = self.rule(op, kind, in_states, in_tensors, out_tensor, fmt)
        except _Unfollowable as exc:
            if self.strict:
                raise ConvforgeError(
                    f"cannot follow the receptive field through layer {prefix + op.name!r} of type "
                    f"{type(op).__name__}: {exc}. Supported layer types: {', '.join(SUPPORTED_LAYER_TYPES)}; "
                    "a custom layer that maps each pixel to the same pixel can declare "
                    "receptive_field_passthrough = True"
                ) from None
            return _State(None, static, f"{prefix + op.name} ({type(op).__name__}): {exc}")
        if static is not None:
            hw = static
        return _State(field, hw if _is_image(out_tensor) else None, None)

    def rule(self, op, kind, in_states, in_tensors, out_tensor, fmt):
        cfg = _config(op)
        local = [s for s in in_states if not s.field.is_global]
        context = any(s.field.is_global or s.field.global_context for s in in_states)

        if getattr(op, "receptive_field_passthrough", False) or getattr(op, "receptive_field_global_context", False):
            if len(local) != 1:
                raise _Unfollowable("a pass-through layer must have exactly one spatial input")
            field = local[0].field
            if context or getattr(op, "receptive_field_global_context", False):
                field = field._replace(global_context=True)
            return field, local[0].hw

        if kind in _MERGE_TYPES:
            return self.merge(op, kind, in_states, out_tensor, fmt)

        if len(in_states) != 1:
            raise _Unfollowable(f"expected one input, got {len(in_states)}")
        state = in_states[0]
        field, hw = state.field, state.hw
        in_image = _is_image(in_tensors[0])

        if kind in PASSTHROUGH_TYPES:
            return field, hw
        if kind in _GLOBAL_TYPES:
            return _global_field(self.image_hw), None
        if kind == "Dense":
            # Keras 3 Dense acts on the last axis only, i.e. a 1x1 convolution on an image.
            if in_image and fmt != "channels_first":
                return field, hw
            raise _Unfollowable("Dense on a non-image tensor with a local field")
        if not in_image:
            raise _Unfollowable("input is not an image tensor (batch, H, W, C)")

        if kind in _CONV_TYPES or kind in _POOL_TYPES:
            if kind in _POOL_TYPES:
                kernel = _pair(cfg["pool_size"])
                strides = _pair(cfg.get("strides") or cfg["pool_size"])
                dilation = (1, 1)
            else:
                kernel = _pair(cfg["kernel_size"])
                strides = _pair(cfg.get("strides", 1))
                dilation = _pair(cfg.get("dilation_rate", 1))
            padding = cfg.get("padding", "valid").lower()
            k_eff = tuple(dilation[a] * (kernel[a] - 1) + 1 for a in range(2))
            pads = []
            for a in range(2):
                if padding == "valid":
                    pads.append(0)
                elif padding == "same":
                    if hw is None:
                        if strides[a] != 1:
                            raise _Unfollowable("'same' padding with a stride needs a known input size")
                        pads.append((k_eff[a] - 1) // 2)
                    else:
                        pads.append(same_padding(hw[a], kernel[a], strides[a], dilation[a])[0])
                else:
                    raise _Unfollowable(f"padding {padding!r}")
            out_hw = None
            if hw is not None:
                out_hw = tuple(conv_output_size(hw[a], kernel[a], strides[a], padding, dilation[a]) for a in range(2))
            return _window(field, k_eff, strides, pads), out_hw

        if kind == "Conv2DTranspose":
            return self.conv_transpose(cfg, field, hw, out_tensor, fmt)

        if kind == "ZeroPadding2D":
            (top, bottom), (left, right) = cfg["padding"]
            out_hw = (hw[0] + top + bottom, hw[1] + left + right) if hw else None
            return _shift(field, (-top, -left)), out_hw

        if kind == "Cropping2D":
            (top, bottom), (left, right) = cfg["cropping"]
            out_hw = (hw[0] - top - bottom, hw[1] - left - right) if hw else None
            return _shift(field, (top, left)), out_hw

        if kind == "UpSampling2D":
            # Not affine: output unit u reads input unit floor(u/s) (nearest) or the two around
            # c = (u + 0.5)/s - 0.5 (bilinear, half-pixel centres). Centre each field on c and
            # widen it just enough to contain the true one for every u, so the box is a
            # superset, at most one input jump too wide.
            size = _pair(cfg["size"])
            nearest = cfg.get("interpolation", "nearest") == "nearest"
            grow = [Fraction(size[a] - 1, size[a]) if nearest else 2 - Fraction(1, size[a]) for a in range(2)]
            new = field._replace(
                size=tuple(field.size[a] + grow[a] * field.jump[a] for a in range(2)),
                start=tuple(field.start[a] + (Fraction(1, 2 * size[a]) - Fraction(1, 2)) * field.jump[a]
                            for a in range(2)),
                jump=tuple(field.jump[a] / size[a] for a in range(2)),
            )
            return new, (hw[0] * size[0], hw[1] * size[1]) if hw else None

        if kind in _ADAPTIVE_TYPES:
            out = _pair(cfg["output_size"])
            if hw is None:
                raise _Unfollowable("adaptive pooling needs a known input size")
            if tuple(out) == tuple(hw):
                return field, hw
            if all(hw[a] % out[a] == 0 for a in range(2)):
                # Equal bins are exactly a pooling window of in/out with the same stride.
                k = tuple(hw[a] // out[a] for a in range(2))
                return _window(field, k, k, (0, 0)), tuple(out)
            # Unequal bins have no single stride; treated as seeing the whole input.
            return _global_field(self.image_hw), tuple(out)

        if kind in ("Reshape", "Resizing", "CenterCrop"):
            out_hw = _static_hw(out_tensor, fmt)
            if kind == "Reshape" and not _is_image(out_tensor):
                # No pixel layout is left: downstream units depend on every position.
                return _global_field(self.image_hw), None
            if hw is not None and out_hw == tuple(hw):
                return field, hw
            raise _Unfollowable("it changes the spatial layout")

        raise _Unfollowable("layer type not supported")

    def conv_transpose(self, cfg, field, hw, out_tensor, fmt):
        # Output unit o receives input units i with o = i*s + t*d - pad, i.e. integers in
        # [c - (k_eff-1)/(2s), c + (k_eff-1)/(2s)] with c = (o + pad - (k_eff-1)/2) / s. Using
        # that whole interval makes the jump j/s and the box a superset of the true field
        # (too wide by less than one input jump when k_eff is not a multiple of s).
        kernel = _pair(cfg["kernel_size"])
        strides = _pair(cfg.get("strides", 1))
        dilation = _pair(cfg.get("dilation_rate", 1))
        padding = cfg.get("padding", "valid").lower()
        output_padding = _pair(cfg.get("output_padding"))
        out_hw = _static_hw(out_tensor, fmt)
        if out_hw is None and hw is not None:
            out_hw = tuple(conv_transpose_output_size(
                hw[a], kernel[a], strides[a], padding, None if output_padding is None else output_padding[a],
                dilation[a]) for a in range(2))
        size, jump, start = [], [], []
        for a in range(2):
            k_eff = dilation[a] * (kernel[a] - 1) + 1
            s = strides[a]
            if padding == "same":
                if hw is None or out_hw is None:
                    raise _Unfollowable("'same' padding needs a known input size")
                # TF runs it as the gradient of a 'same' conv mapping the output size back.
                pad = max((hw[a] - 1) * s + k_eff - out_hw[a], 0) // 2
            else:
                pad = 0
            j = field.jump[a]
            size.append(field.size[a] + Fraction(k_eff - 1, s) * j)
            start.append(field.start[a] + (pad - Fraction(k_eff - 1, 2)) / s * j)
            jump.append(j / s)
        return field._replace(size=tuple(size), jump=tuple(jump), start=tuple(start)), out_hw

    def merge(self, op, kind, in_states, out_tensor, fmt):
        out_hw = _static_hw(out_tensor, fmt)
        if not _is_image(out_tensor):
            raise _Unfollowable("merge of non-image tensors with local fields")
        if kind == "Concatenate":
            axis = getattr(op, "axis", -1)
            channel_axes = (1, -3) if fmt == "channels_first" else (3, -1)
            if axis not in channel_axes:
                raise _Unfollowable(f"concatenation along spatial axis {axis}")
        spatial, context = [], False
        for s in in_states:
            f = s.field
            broadcast = s.hw is not None and tuple(s.hw) == (1, 1) and out_hw is not None and tuple(out_hw) != (1, 1)
            if f.is_global or broadcast:
                # A 1x1 gate broadcast over the map modulates every unit without moving it.
                context = True
                continue
            spatial.append(s)
            context = context or f.global_context
        if not spatial:
            raise _Unfollowable("no spatial input")
        jumps = {s.field.jump for s in spatial}
        if len(jumps) != 1:
            raise _Unfollowable(f"its inputs have different jumps {sorted(tuple(map(float, j)) for j in jumps)}")
        size, start = [], []
        for a in range(2):
            lows = [s.field.start[a] - (s.field.size[a] - 1) / 2 for s in spatial]
            highs = [s.field.start[a] + (s.field.size[a] - 1) / 2 for s in spatial]
            low, high = min(lows), max(highs)
            size.append(high - low + 1)
            start.append((low + high) / 2)
        field = _Field(tuple(size), spatial[0].field.jump, tuple(start), False, context)
        return field, out_hw if out_hw is not None else spatial[0].hw

    # -- MACs ----------------------------------------------------------------------------
    def node_macs(self, op, in_tensors, in_states, out_tensors, out_states, prefix):
        if not in_tensors or not out_tensors:
            return 0
        in_shape = _resolved_shape(in_tensors[0], in_states[0].hw, self.data_format)
        out_shape = _resolved_shape(out_tensors[0], out_states[0].hw, self.data_format)
        try:
            return _op_macs(op, in_shape, out_shape)
        except ConvforgeError as exc:
            if self.macs_problem is None:
                self.macs_problem = str(exc)
            return None


def _resolved_shape(tensor, hw, data_format):
    """Return tensor's shape without batch, with unknown spatial sizes filled from hw."""
    shape = _shape(tensor)
    if shape is None:
        return None
    shape = list(shape[1:])
    if len(shape) == 3 and hw is not None:
        axes = (1, 2) if data_format == "channels_first" else (0, 1)
        for a, v in zip(axes, hw):
            if shape[a] is None:
                shape[a] = v
    return tuple(shape)


def _walk(model, strict=False):
    walker = _Walker(strict)
    records = walker.run_top(model)
    return records, walker


def receptive_fields(model, strict=False):
    """Return {layer name: ReceptiveField or None} for every layer of a functional model, in order."""
    records, _ = _walk(model, strict)
    return {r.name: _public(r.state.field) for r in records}


# --------------------------------------------------------------------------------------
# MACs and parameters
# --------------------------------------------------------------------------------------

_CONV_MAC_TYPES = frozenset({"Conv1D", "Conv2D", "Conv3D"})
_DEPTHWISE_MAC_TYPES = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
_SEPARABLE_MAC_TYPES = frozenset({"SeparableConv1D", "SeparableConv2D"})
_TRANSPOSE_MAC_TYPES = frozenset({"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"})
_MAC_TYPES = _CONV_MAC_TYPES | _DEPTHWISE_MAC_TYPES | _SEPARABLE_MAC_TYPES | _TRANSPOSE_MAC_TYPES | {"Dense"}


def _mac_kind(op):
    for cls in type(op).__mro__:
        if cls.__name__ in _MAC_TYPES:
            return cls.__name__
    return None


def _split(shape, data_format):
    """Split a batchless shape into (spatial dims, channels)."""
    if data_format == "channels_first":
        return shape[1:], shape[0]
    return shape[:-1], shape[-1]


def _op_macs(op, in_shape, out_shape):
    if hasattr(op, "macs_per_image") and in_shape is not None and out_shape is not None:
        return op.macs_per_image(in_shape, out_shape)  # a custom layer that counts its own (batchless shapes)
    kind = _mac_kind(op)
    if kind is None:
        return 0
    if in_shape is None or out_shape is None or None in in_shape or None in out_shape:
        raise ConvforgeError(
            f"layer {op.name!r} has input {in_shape} and output {out_shape} of unknown size; "
            "build the model with a fixed input size"
        )
    cfg = _config(op)
    if kind == "Dense":
        return math.prod(in_shape[:-1]) * in_shape[-1] * cfg["units"]
    fmt = cfg.get("data_format", "channels_last")
    in_spatial, c_in = _split(in_shape, fmt)
    out_spatial, c_out = _split(out_shape, fmt)
    taps = math.prod(_pair(cfg["kernel_size"]) if len(in_spatial) == 2 else tuple(cfg["kernel_size"]))
    if kind in _CONV_MAC_TYPES:
        return math.prod(out_spatial) * c_out * taps * c_in // cfg.get("groups", 1)
    if kind in _DEPTHWISE_MAC_TYPES:
        return math.prod(out_spatial) * c_in * cfg["depth_multiplier"] * taps
    if kind in _SEPARABLE_MAC_TYPES:
        mid = c_in * cfg["depth_multiplier"]
        return math.prod(out_spatial) * (mid * taps + mid * cfg["filters"])
    # Transposed: every input pixel scatters its kernel into all output channels.
    return math.prod(in_spatial) * c_in * taps * c_out // cfg.get("groups", 1)


def layer_macs(layer):
    """Return the multiply-accumulates of one layer (or nested model) for one image."""
    if _graph_io(layer) is not None:
        return count_macs(layer)
    try:
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    except (AttributeError, ValueError) as exc:
        if _mac_kind(layer) is None:
            return 0
        raise ConvforgeError(f"layer {layer.name!r} has not been called on an input yet") from exc
    if in_shape is None or out_shape is None:
        return 0 if _mac_kind(layer) is None else _op_macs(layer, None, None)
    return _op_macs(layer, in_shape[1:], out_shape[1:])


def count_macs(model):
    """Return the total multiply-accumulates of a model's forward pass on one image."""
    _, walker = _walk(model)
    if walker.total_macs is None:
        raise ConvforgeError(f"cannot count the MACs of {getattr(model, 'name', 'the model')!r}: {walker.macs_problem}")
    return walker.total_macs


def _weights_size(weights):
    return sum(math.prod(int(d) for d in w.shape) for w in weights)


def count_params(model):
    """Return dict(total=, trainable=, non_trainable=) parameter counts of a built model."""
    trainable = _weights_size(model.trainable_weights)
    non_trainable = _weights_size(model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------

def _layer_params(layer):
    try:
        total = int(layer.count_params())
    except Exception:  # Unbuilt layers raise; their size is not known yet.
        return None, None
    try:
        trainable = _weights_size(layer.trainable_weights)
    except Exception:
        trainable = None
    return total, trainable


def layer_table(model):
    """Return one dict per layer: name, type, output_shape, rf, params, macs (+ trainable, depth, spatial)."""
    records, walker = _walk(model)
    rows = []
    for r in records:
        tensors = r.node.outputs if r.node is not None else [getattr(r.layer, "output", None)]
        shapes = [_resolved_shape(t, r.state.hw, walker.data_format) for t in tensors if t is not None]
        output_shape = shapes[0] if len(shapes) == 1 else tuple(shapes)
        params, trainable = _layer_params(r.layer)
        rows.append({
            "name": r.name,
            "type": type(r.layer).__name__,
            "output_shape": output_shape,
            "rf": _public(r.state.field),
            "params": params,
            "macs": r.macs,
            "trainable": trainable,
            "depth": r.depth,
            "spatial": tuple(r.state.hw) if r.state.hw is not None else None,
        })
    return rows


def _fmt_pair(pair):
    a, b = (_plain(v) for v in pair)
    return f"{a}" if a == b else f"{a}x{b}"


def _fmt_rf(rf):
    if rf is None:
        return "?"
    if rf.is_global:
        return "global"
    text = _fmt_pair(rf.size)
    return text + "+g" if rf.global_context else text


def _fmt_jump(rf):
    if rf is None:
        return "?"
    if rf.is_global:
        return "-"
    return _fmt_pair(rf.jump)


def _fmt_int(value):
    return "?" if value is None else f"{value:,}"


def _fmt_shape(shape):
    if shape is None:
        return "?"
    if shape and isinstance(shape[0], tuple):
        return ", ".join(_fmt_shape(s) for s in shape)
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _fmt_macs_total(macs):
    if macs is None:
        return "?"
    if macs >= 1e9:
        return f"{macs / 1e9:.2f} G"
    return f"{macs / 1e6:.2f} M"


def format_table(rows, totals=True):
    """Return layer_table rows as an aligned text table with an optional totals line."""
    header = ("name", "type", "output shape", "RF", "jump", "params", "MACs")
    body = [(
        row["name"], row["type"], _fmt_shape(row.get("output_shape")), _fmt_rf(row.get("rf")),
        _fmt_jump(row.get("rf")), _fmt_int(row.get("params")), _fmt_int(row.get("macs")),
    ) for row in rows]
    widths = [max(len(line[c]) for line in [header] + body) for c in range(len(header))]
    right = {3, 4, 5, 6}

    def render(line):
        cells = [line[c].rjust(widths[c]) if c in right else line[c].ljust(widths[c]) for c in range(len(line))]
        return "  ".join(cells).rstrip()

    lines = [render(header), "  ".join("-" * w for w in widths)]
    lines += [render(line) for line in body]
    if totals:
        # Nested models already include their inner layers, so only top-level rows add up.
        top = [row for row in rows if row.get("depth", 0) == 0]
        params = [row.get("params") for row in top]
        trainable = [row.get("trainable") for row in top]
        macs = [row.get("macs") for row in top]
        total_params = None if None in params else sum(params)
        total_trainable = None if None in trainable else sum(trainable)
        total_macs = None if None in macs else sum(macs)
        lines.append("  ".join("-" * w for w in widths))
        lines.append(
            f"Total params: {_fmt_int(total_params)} (trainable {_fmt_int(total_trainable)})"
            f"  |  MACs: {_fmt_macs_total(total_macs)}"
            + ("" if total_macs is None else f" ({total_macs:,})")
        )
    return "\n".join(lines)
