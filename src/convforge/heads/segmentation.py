"""Semantic segmentation decoders on a backbone's named levels, their upsampling, pixel losses and metrics.

Decoders: FCN-32s/16s/8s (Long et al., CVPR 2015: 1x1 score layers on C5, C4, C3, fused coarse to fine), UNet
(Ronneberger et al., MICCAI 2015: up one level at a time, concatenated with that level's features, two 3x3 convs)
and a dilated decoder (DeepLab-v3, Chen et al. 2017: atrous spatial pyramid pooling on a backbone whose last
strides became dilation, e.g. ResNet's output_stride=8).
Each upsamples in one of three ways, a recipe choice:

- `transpose`: a learnable transposed convolution (kernel 2f, stride f) initialized to bilinear interpolation,
  as FCN's deconvolution layers are;
- `bilinear`: a fixed bilinear resize followed by a 3x3 convolution;
- `unpool`: max-unpooling into the positions the encoder's 2x2 max-pools took their maxima from (SegNet,
  Badrinarayanan et al., TPAMI 2017), followed by a 3x3 convolution that fills the zeros. The switches are the
  argmax of each pool's own input (layers.MaxPoolWithArgmax on it), so any backbone that downsamples by
  non-overlapping max-pools serves (VGG's five pools) with its layers untouched.

Every decoder ends at the input size, odd sizes included (each upsampled map is cropped or padded to the size of
the level it meets), in per-pixel class probabilities (B, H, W, K), class 0 the background.
"""
import math

import keras
import numpy as np
from keras import layers, ops

from convforge.errors import ModelError
from convforge.layers.conv import conv_bn_act
from convforge.layers.unpooling import MaxPoolWithArgmax, MaxUnpool

IGNORE_LABEL = 255
UPSAMPLING = ("unpool", "transpose", "bilinear")


def bilinear_kernel(size):
    """The (size, size) weights of bilinear upsampling by (size + 1) // 2 (FCN's deconvolution initializer)."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.arange(size)
    weights = 1 - np.abs(grid - centre) / factor
    return np.outer(weights, weights).astype("float32")


@keras.saving.register_keras_serializable(package="convforge")
class BilinearUpsampling(keras.initializers.Initializer):
    """A Conv2DTranspose kernel (k, k, out, in) that upsamples each channel bilinearly (channel c to channel c)."""

    def __call__(self, shape, dtype=None):
        size, _, out_channels, in_channels = shape
        kernel = np.zeros(shape, "float32")
        for c in range(min(out_channels, in_channels)):
            kernel[:, :, c, c] = bilinear_kernel(size)
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}


def fit_to(x, size, name):
    """Crop or zero-pad x at its bottom and right to spatial `size` (decoders meet odd-sized levels)."""
    height, width = x.shape[1], x.shape[2]
    crop = (max(height - size[0], 0), max(width - size[1], 0))
    if any(crop):
        x = layers.Cropping2D(((0, crop[0]), (0, crop[1])), name=f"{name}_crop")(x)
    pad = (max(size[0] - height, 0), max(size[1] - width, 0))
    if any(pad):
        x = layers.ZeroPadding2D(((0, pad[0]), (0, pad[1])), name=f"{name}_pad")(x)
    return x


def switches_of(backbone):
    """{stride of a pool's output: (its argmax indices, the pooled input's (H, W))} for each non-overlapping 2x2
    max-pool of the backbone: what `unpool` puts values back into."""
    found = {}
    image = backbone.input.shape[1]
    for layer in backbone._flatten_layers(include_self=False):
        if not isinstance(layer, layers.MaxPooling2D):
            continue
        if tuple(layer.pool_size) != (2, 2) or tuple(layer.strides) != (2, 2) or layer.padding != "valid":
            continue
        source = layer.input
        # Odd sizes pool to floor(h / 2): the nearest power of two names the level (67 px -> 2 px is stride 32).
        stride = 2 ** round(math.log2(image / layer.output.shape[1]))
        _, index = MaxPoolWithArgmax(2, name=f"{layer.name}_switches")(source)
        found[stride] = (index, (source.shape[1], source.shape[2]))
    return found


def upsample(x, factor, mode, name, *, switches=None, stride=None, features=True):
    """x (at `stride` of the input) upsampled by `factor`, channels kept.

    features: x is a feature map (the convs of `bilinear` and `unpool` add BN + ReLU) rather than class scores
    (linear convs, as FCN's score maps stay linear)."""
    channels = x.shape[-1]

    def refine(y, tag):
        """The 3x3 conv that follows a resize or an unpooling."""
        if features:
            return conv_bn_act(y, channels, 3, 1, "same", name=f"{name}_{tag}")
        return layers.Conv2D(channels, 3, padding="same", name=f"{name}_{tag}_conv")(y)

    if mode == "transpose":
        return layers.Conv2DTranspose(channels, 2 * factor, strides=factor, padding="same", use_bias=False,
                                      kernel_initializer=BilinearUpsampling(), name=f"{name}_transpose")(x)
    if mode == "bilinear":
        y = layers.UpSampling2D(factor, interpolation="bilinear", name=f"{name}_resize")(x)
        return refine(y, "refine")
    if mode != "unpool":
        raise ModelError(f"upsampling {mode!r} is unknown; accepted: {', '.join(UPSAMPLING)}")
    steps = int(round(math.log2(factor)))
    if 2 ** steps != factor:
        raise ModelError(f"{name}: unpooling upsamples by powers of 2, not {factor}")
    for step in range(steps):
        here = stride // 2 ** step
        if here not in (switches or {}):
            have = sorted(switches or {})
            raise ModelError(f"upsampling 'unpool' needs a 2x2 max-pool of the backbone whose output is at stride "
                             f"{here} (its switches); this backbone has them at strides {have or 'none'}; "
                             f"accepted: a backbone that downsamples by max-pools (vgg11/13/16/19), or "
                             f"upsampling transpose or bilinear")
        index, size = switches[here]
        y = x
        if y.shape[-1] != index.shape[-1]:
            y = layers.Conv2D(index.shape[-1], 1, use_bias=False, name=f"{name}_{step}_to_pool")(y)
        y = fit_to(y, (index.shape[1], index.shape[2]), f"{name}_{step}")
        y = MaxUnpool(2, output_size=size, name=f"{name}_{step}_unpool")([y, index])
        x = refine(y, f"{step}")
    return x


def _probabilities(x, num_classes, size, head_dtype, name="probabilities"):
    """Crop or pad to the input size, then softmax over the classes in float32."""
    x = fit_to(x, size, "output")
    return layers.Activation("softmax", dtype=head_dtype or "float32", name=name)(x)


def fcn(levels, strides, num_classes, variant, mode, size, switches=None, head_dtype=None):
    """FCN-32s (variant 32), -16s or -8s: score maps of C5 (and C4, C3) fused coarse to fine, then up to `size`."""
    fused = {32: ("C5",), 16: ("C5", "C4"), 8: ("C5", "C4", "C3")}[variant]
    x = layers.Conv2D(num_classes, 1, name="score_C5")(levels["C5"])
    stride = strides["C5"]
    for name in fused[1:]:
        x = upsample(x, stride // strides[name], mode, f"up_{name}", switches=switches, stride=stride,
                     features=False)
        x = fit_to(x, levels[name].shape[1:3], f"up_{name}")
        x = layers.Add(name=f"fuse_{name}")([x, layers.Conv2D(num_classes, 1, name=f"score_{name}")(levels[name])])
        stride = strides[name]
    x = upsample(x, stride, mode, "up_image", switches=switches, stride=stride, features=False)
    return _probabilities(x, num_classes, size, head_dtype)


def unet(levels, strides, num_classes, channels, mode, size, switches=None, head_dtype=None):
    """UNet's decoder over every level (deepest first): up to the next level's size, concatenate it, two 3x3
    conv + BN + ReLU; then up to the input and a 1x1 classifier. Widths double per level from `channels`."""
    names = sorted(levels, key=lambda n: strides[n])
    x, stride = levels[names[-1]], strides[names[-1]]
    for name in reversed(names[:-1]):
        x = upsample(x, stride // strides[name], mode, f"up_{name}", switches=switches, stride=stride)
        x = fit_to(x, levels[name].shape[1:3], f"up_{name}")
        x = layers.Concatenate(name=f"skip_{name}")([x, levels[name]])
        width = channels * min(strides[name], 8)
        x = conv_bn_act(x, width, 3, 1, "same", name=f"dec_{name}_a")
        x = conv_bn_act(x, width, 3, 1, "same", name=f"dec_{name}_b")
        stride = strides[name]
    if stride > 1:
        x = upsample(x, stride, mode, "up_image", switches=switches, stride=stride)
        x = fit_to(x, size, "up_image")
        x = conv_bn_act(x, channels, 3, 1, "same", name="dec_image")
    x = layers.Conv2D(num_classes, 1, name="classifier")(x)
    return _probabilities(x, num_classes, size, head_dtype)


def dilated(levels, strides, num_classes, channels, rates, mode, size, switches=None, head_dtype=None):
    """DeepLab-v3's decoder on the deepest level of a dilated backbone (output stride 8 or 16): atrous spatial
    pyramid pooling (a 1x1 conv, 3x3 convs at each of `rates`, and the image's mean), fused by a 1x1 conv, then
    class scores upsampled to the input."""
    name = max(levels, key=lambda n: strides[n])
    x, stride = levels[name], strides[name]
    branches = [conv_bn_act(x, channels, 1, 1, "same", name="aspp_1x1")]
    for rate in rates:
        branches.append(conv_bn_act(x, channels, 3, 1, "same", dilation_rate=rate, name=f"aspp_rate{rate}"))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = conv_bn_act(pooled, channels, 1, 1, "same", name="aspp_image")
    branches.append(layers.UpSampling2D((x.shape[1], x.shape[2]), name="aspp_image_resize")(pooled))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_act(x, channels, 1, 1, "same", name="aspp_fuse")
    x = layers.Conv2D(num_classes, 1, name="classifier")(x)
    x = upsample(x, stride, mode, "up_image", switches=switches, stride=stride, features=False)
    return _probabilities(x, num_classes, size, head_dtype)


# --- losses and metrics

@keras.saving.register_keras_serializable(package="convforge")
class PixelLoss(keras.losses.Loss):
    """Per-image mean over labelled pixels of cross-entropy (or focal loss when focal_gamma > 0), each pixel
    weighted by its class's weight, plus dice_weight x soft Dice loss; pixels labelled `ignore_label` count
    nowhere. y_true (B, H, W) class ids, y_pred (B, H, W, K) probabilities."""

    def __init__(self, num_classes, class_weights=None, ignore_label=IGNORE_LABEL, focal_gamma=0.0,
                 dice_weight=0.0, name="pixel_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.ignore_label = int(num_classes), int(ignore_label)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.focal_gamma, self.dice_weight = float(focal_gamma), float(dice_weight)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        labels = ops.cast(y_true, "int32")
        valid = ops.not_equal(labels, self.ignore_label)
        labels = ops.where(valid, labels, 0)
        mask = ops.cast(valid, "float32")
        one_hot = ops.one_hot(labels, self.num_classes) * mask[..., None]
        probability = ops.sum(one_hot * y_pred, axis=-1)
        pixel = -ops.log(ops.clip(probability, 1e-7, 1.0))
        if self.focal_gamma:
            pixel = pixel * ops.power(1.0 - probability, self.focal_gamma)
        if self.class_weights is not None:
            pixel = pixel * ops.take(ops.convert_to_tensor(self.class_weights, "float32"), labels)
        counted = ops.maximum(ops.sum(mask, axis=(1, 2)), 1.0)
        loss = ops.sum(pixel * mask, axis=(1, 2)) / counted
        if self.dice_weight:
            predicted = y_pred * mask[..., None]
            overlap = ops.sum(one_hot * predicted, axis=(1, 2))
            total = ops.sum(one_hot, axis=(1, 2)) + ops.sum(predicted, axis=(1, 2))
            loss = loss + self.dice_weight * (1.0 - ops.mean((2.0 * overlap + 1.0) / (total + 1.0), axis=-1))
        return loss

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "class_weights": self.class_weights,
                "ignore_label": self.ignore_label, "focal_gamma": self.focal_gamma, "dice_weight": self.dice_weight}


@keras.saving.register_keras_serializable(package="convforge")
class PixelAccuracy(keras.metrics.Metric):
    """The fraction of labelled pixels (not `ignore_label`) whose most probable class is their label."""

    def __init__(self, ignore_label=IGNORE_LABEL, name="pixel_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_label = int(ignore_label)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.cast(y_true, "int32")
        valid = ops.cast(ops.not_equal(labels, self.ignore_label), "float32")
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels), "float32")
        self.correct.assign_add(ops.sum(hit * valid))
        self.total.assign_add(ops.sum(valid))

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "ignore_label": self.ignore_label}


def confusion_matrix(labels, predicted, num_classes, ignore_label=IGNORE_LABEL):
    """(K, K) int64 counts of (true class, predicted class) over the labelled pixels of numpy arrays."""
    labels, predicted = np.asarray(labels).reshape(-1).astype(np.int64), np.asarray(predicted).reshape(-1)
    keep = labels != ignore_label
    return np.bincount(labels[keep] * num_classes + predicted[keep].astype(np.int64),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(matrix):
    """(per-class IoU (K,) with NaN for a class neither labelled nor predicted, mean IoU over the others,
    pixel accuracy) of a confusion matrix."""
    matrix = np.asarray(matrix, np.float64)
    hits = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, hits / union, np.nan)
    present = ~np.isnan(iou)
    mean = float(iou[present].mean()) if present.any() else 0.0
    accuracy = float(hits.sum() / matrix.sum()) if matrix.sum() else 0.0
    return iou, mean, accuracy
