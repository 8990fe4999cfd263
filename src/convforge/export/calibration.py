"""Calibration images for full-integer int8 from files a user has: an image folder or a .npy array.

int8 quantization needs inputs exactly as the model sees them. An .npy array is taken as already-normalized
float32 input; image files are resized and normalized by the preprocessing saved with the model
(`preprocessing.json` beside model.keras), through the same `preprocess` the SavedModel serves with, so
calibration sees the pixels training did.
"""
import os

import numpy as np

from convforge.data.records import IMAGE_EXTENSIONS
from convforge.errors import DataError, ExportError

UNIT_SCALE = "pixels / 255 (no preprocessing.json beside the model)"


def calibration_images(path, shape, preprocessing=None, limit=500):
    """Return float32 model inputs [N, H, W, C] from an image folder (searched recursively) or an .npy file.

    preprocessing: the model's saved preprocessing dict (None: pixels / 255). At most `limit` images.
    """
    from convforge import preprocessing as pixels

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
    spec = pixels.check(preprocessing or pixels.default(shape), shape[2])
    batches = []
    for file in files:
        try:
            image = pixels.read_image(file, shape[2])
        except DataError:
            continue  # a stray non-image file in the folder is not a calibration image
        batches.append(np.asarray(pixels.preprocess(image[None], spec), dtype=np.float32))
    if not batches:
        raise ExportError(f"calibration folder {path} holds no readable image ({', '.join(IMAGE_EXTENSIONS)}); "
                          f"accepted: a folder of the images the model will see, or an .npy array")
    return np.concatenate(batches)
