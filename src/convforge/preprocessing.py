"""The preprocessing contract: how image pixels become a model's input, decided once per recipe.

A contract is a small dict: `resize` [H, W] (bilinear unless `interpolation` says otherwise), `channels`,
`round` (resized pixels are rounded back to 0..255, as the pipeline caches uint8 images), `scale` (1/255) and
per-channel `mean` / `std` on the scaled values: input = (pixels * scale - mean) / std.

Training writes it as `preprocessing.json` beside `model.keras`; the tf.data pipeline, the SavedModel's uint8
serving signature, `predict`, `evaluate`, int8 calibration and any later consumer (attacks need the pixel
scale) all read it and go through the functions below, so every one of them sees the pixels training did.
A model without a saved contract is taken to expect pixels / 255 (`default`), and callers say so.
"""
import json
import os

import numpy as np

from convforge.errors import ConvforgeError, DataError, close_matches

FILE_NAME = "preprocessing.json"
KEYS = ("resize", "channels", "interpolation", "scale", "mean", "std", "round")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def normalization(normalize, channels):
    """Return (mean, std) lists on the 0..1 scale for a normalize setting and channel count."""
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise DataError(f"normalize={normalize!r} is not accepted; accepted: {', '.join(NORMALIZATIONS)} or a "
                            f"(mean, std) pair{close_matches(normalize, NORMALIZATIONS)}")
        mean, std = NORMALIZATIONS[normalize]
        if channels == 1:
            # One grey channel takes the average of the colour statistics (as torchvision's Grayscale users do).
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    else:
        try:
            mean, std = normalize
            mean, std = [float(m) for m in mean], [float(s) for s in std]
        except (TypeError, ValueError):
            raise DataError(f"normalize={normalize!r} is not accepted; accepted: {', '.join(NORMALIZATIONS)} or a "
                            f"(mean, std) pair of lists on the 0..1 scale") from None
        if len(mean) == 1 and len(std) == 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise DataError(f"normalize mean {mean} and std {std} must have {channels} values each "
                            f"(or one) and std must be positive")
    return [float(m) for m in mean][:channels], [float(s) for s in std][:channels]


def contract(input_shape, normalize="imagenet"):
    """The contract of a model input (H, W, C) normalized by `normalize` ("imagenet", "unit" or (mean, std)).

    Examples:
        >>> p = contract((224, 224, 3), "imagenet")
        >>> p["resize"], p["channels"], p["mean"]
        ([224, 224], 3, [0.485, 0.456, 0.406])
    """
    try:
        height, width, channels = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise DataError(f"input_shape={input_shape!r} must be (height, width, channels)") from None
    if height < 1 or width < 1 or channels not in (1, 3):
        raise DataError(f"input_shape={input_shape!r} needs positive height and width and 1 or 3 channels")
    mean, std = normalization(normalize, channels)
    return {"resize": [height, width], "channels": channels, "interpolation": "bilinear", "scale": 1 / 255.0,
            "mean": mean, "std": std}


def default(shape):
    """What a bare model without a saved contract is taken to expect: pixels scaled to 0..1."""
    return contract(shape, "unit")


def check(spec, channels):
    """Return a complete contract (defaults filled in), or raise ConvforgeError naming the bad key."""
    if not isinstance(spec, dict):
        raise ConvforgeError(f"preprocessing={spec!r} is not accepted; accepted: a dict like "
                             f"{{'resize': [H, W], 'channels': C, 'scale': 1/255, 'mean': [...], 'std': [...]}}")
    for key in spec:
        if key not in KEYS:
            raise ConvforgeError(f"preprocessing key {key!r} is unknown{close_matches(key, KEYS)}; "
                                 f"accepted: {', '.join(KEYS)}")
    full = {"interpolation": "bilinear", "scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels,
            "channels": channels, "round": True, **spec}
    if "resize" not in spec:
        raise ConvforgeError("preprocessing has no 'resize'; accepted: 'resize': [H, W] of the model input")
    if full["interpolation"] not in INTERPOLATIONS:
        raise ConvforgeError(f"preprocessing interpolation {full['interpolation']!r} is not accepted; accepted: "
                             f"{', '.join(INTERPOLATIONS)}")
    if int(full["channels"]) != channels:
        raise ConvforgeError(f"preprocessing channels={full['channels']} does not match the model's {channels} "
                             f"input channels; accepted: {channels}")
    for key in ("mean", "std"):
        values = [float(v) for v in np.ravel(full[key])]
        if len(values) == 1:
            values = values * channels
        if len(values) != channels or (key == "std" and min(values) <= 0):
            raise ConvforgeError(f"preprocessing {key}={full[key]!r} is not accepted; accepted: {channels} "
                                 f"{'positive ' if key == 'std' else ''}values (or one)")
        full[key] = values
    full["resize"] = [int(v) for v in full["resize"]]
    full["channels"], full["scale"], full["round"] = int(full["channels"]), float(full["scale"]), bool(full["round"])
    return full


def saved_beside(model_path, shape):
    """(contract, saved) for the model file at model_path: its run's preprocessing.json, else `default(shape)`
    with saved=False; a contract that does not fit the model's input (H, W, C) is refused."""
    path = os.path.join(os.path.dirname(os.path.abspath(str(model_path))), FILE_NAME)
    if not os.path.isfile(path):
        return check(default(shape), shape[2]), False
    try:
        with open(path, encoding="utf-8") as f:
            spec = check(json.load(f), shape[2])
    except (OSError, ValueError, ConvforgeError) as err:
        raise ConvforgeError(f"{path} is not a preprocessing contract ({err}); accepted: the "
                             f"{FILE_NAME} training wrote, or none (pixels / 255)") from None
    if spec["resize"] != list(shape[:2]):
        raise ConvforgeError(f"{path} resizes to {spec['resize']} but the model takes {list(shape[:2])}; "
                             f"accepted: the {FILE_NAME} of this model's run")
    return spec, True


def to_channels(image, channels):
    """A decoded image tensor with `channels` (1 or 3): alpha dropped, grey and colour converted."""
    import tensorflow as tf

    have = image.shape[-1]
    if have is None:
        # Decoded files have no static channel count: bring every file to RGB first, then convert.
        image = tf.cond(tf.shape(image)[-1] >= 3, lambda: image[..., :3],
                        lambda: tf.tile(image[..., :1], [1, 1, 3]))
        image.set_shape([None, None, 3])
        have = 3
    else:
        image, have = (image[..., :3], 3) if have >= 3 else (image[..., :1], 1)
    if channels == 3 and have == 1:
        image = tf.tile(image, [1, 1, 3])
    elif channels == 1 and have == 3:
        image = tf.image.rgb_to_grayscale(image)
    return image


def resize(images, spec):
    """Resize image(s) to the contract's size; with `round`, back to whole 0..255 values (float32)."""
    import tensorflow as tf

    x = tf.image.resize(tf.cast(images, tf.float32), spec["resize"], method=spec.get("interpolation", "bilinear"))
    return tf.clip_by_value(tf.round(x), 0.0, 255.0) if spec.get("round", True) else x


def crop(images, boxes, spec):
    """Cut normalized [ymin, xmin, ymax, xmax] boxes (one per image, possibly reaching outside it, filled with
    black there) out of images and resize each to the contract's size, rounded like resize (float32)."""
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    out = tf.constant(spec["resize"], tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    # crop_and_resize puts its first and last samples on the box's edges, measured in pixel indices; tf.image.resize
    # samples output pixel j at its centre, (j + 0.5) * extent / out - 0.5. Moving the box onto those sample
    # points makes the crop of [0, 0, 1, 1] equal resize (tested), so crops and whole images share one geometry.
    # resize also clamps samples that fall up to half a pixel outside the image to its edge: a one-pixel border
    # repeating the edge does that here, while samples further out (a crop reaching past the image) read black.
    images = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    start, extent = boxes[:, :2] * size, (boxes[:, 2:] - boxes[:, :2]) * size
    first = (start + 0.5 * extent / out - 0.5 + 1.0) / (size + 1.0)
    last = first + extent * (out - 1.0) / out / (size + 1.0)
    index = tf.range(tf.shape(images)[0])
    x = tf.image.crop_and_resize(images, tf.concat([first, last], 1), index, spec["resize"], method="bilinear")
    return tf.clip_by_value(tf.round(x), 0.0, 255.0) if spec.get("round", True) else x


def normalize(pixels, spec):
    """Scale and standardize pixels at the model's size: (pixels * scale - mean) / std, float32."""
    import tensorflow as tf

    x = tf.cast(pixels, tf.float32) * spec["scale"]
    return (x - tf.constant(spec["mean"], tf.float32)) / tf.constant(spec["std"], tf.float32)


def preprocess(images, spec):
    """Turn uint8 images of any size into the model's normalized float32 input, as the contract says."""
    return normalize(resize(images, spec), spec)


def read_image(path, channels):
    """Decode an image file as the data pipeline does (TensorFlow's decoders) into uint8 (H, W, channels);
    a missing, corrupt or oversized file raises DataError naming it."""
    path = str(path)
    require_image(path)
    import tensorflow as tf

    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
    except (tf.errors.OpError, ValueError) as err:
        raise DataError(f"image {path!r} could not be read: {str(err).splitlines()[0]}") from None
    return np.asarray(to_channels(image, channels), dtype=np.uint8)


def require_image(path):
    """Raise DataError naming an image file that read_image could not decode (missing, corrupt, oversized)."""
    from convforge.data.records import inspect_image

    found = inspect_image(str(path))
    if isinstance(found, str):
        raise DataError(f"image {str(path)!r} could not be read: {found}")
