"""Calibration images for full-integer int8 from files a user has: an image folder or a .npy array.

int8 quantization needs inputs exactly as the model sees them. An .npy array is taken as already-normalized
float32 input; image files are resized and normalized by the preprocessing saved with the model
(`preprocessing.json` beside model.keras), through the same `preprocess` the SavedModel serves with, so
calibration sees the pixels training did.
"""
import os

import numpy as np

from convforge.data.records import IMAGE_EXTENSIONS
from convforge.errors import ExportError

UNIT_SCALE = "pixels / 255 (no preprocessing.json beside the model)"


def default_preprocessing(shape):
    """What a bare model without saved preprocessing is assumed to take: pixels scaled to 0..1."""
    height, width, channels = shape
    return {"resize": [height, width], "channels": channels, "scale": 1 / 255.0, "mean": [0.0] * channels,
            "std": [1.0] * channels}


def calibration_images(path, shape, preprocessing=None, limit=500):
    """Return float32 model inputs [N, H, W, C] from an image folder (searched recursively) or an .npy file.

    preprocessing: the model's saved preprocessing dict (None: pixels / 255). At most `limit` images.
    """
    from convforge.export.saved_model import check_preprocessing, preprocess

    path = os.path.abspath(os.path.expanduser(str(path)))
    if path.endswith(".npy"):
        if not os.path.isfile(path):
            raise ExportError(f"calibration file {path} does not exist; accepted: an .npy array or an image folder")
        from convforge.export.verify import load_images_npy

        return load_images_npy(path, shape, "calibration inputs normalized like training")[:limit]
    if not os.path.isdir(path):
        raise ExportError(f"calibration path {path} does not exist; accepted: an image folder or an .npy array")
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                   if name.lower().endswith(IMAGE_EXTENSIONS))[:limit]
    spec = check_preprocessing(preprocessing or default_preprocessing(shape), shape[2])
    batches = []
    for file in files:
        pixels = _read(file, shape[2])
        if pixels is not None:
            batches.append(np.asarray(preprocess(pixels[None], spec), dtype=np.float32))
    if not batches:
        raise ExportError(f"calibration folder {path} holds no readable image ({', '.join(IMAGE_EXTENSIONS)}); "
                          f"accepted: a folder of the images the model will see, or an .npy array")
    return np.concatenate(batches)


def _read(file, channels):
    """A uint8 image (H, W, C) with the model's channel count, or None for a file that is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("L" if channels == 1 else "RGB")).reshape(
                image.size[1], image.size[0], channels)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
