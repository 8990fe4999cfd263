"""Anchor boxes: a grid per feature level, each cell holding scales x aspect ratios (SSD, RetinaNet, RPN)."""
import itertools

import numpy as np


def anchor_grid(image_size, strides, base_sizes, scales=(1.0,), aspect_ratios=(0.5, 1.0, 2.0)):
    """All anchors of an image as normalized yxyx boxes (A, 4), float32, level by level, then row, column and
    (scale, ratio).

    image_size: (H, W) of the model input; strides: {level: stride in pixels} (a backbone's feature levels);
    base_sizes: {level: anchor side in pixels at scale 1 and ratio 1}; an anchor of ratio r is sqrt(r) times
    taller than wide (r = height / width) with the same area. Cell (i, j) of a level is centred at
    ((i + 0.5) * stride, (j + 0.5) * stride), and the level has ceil(H / stride) x ceil(W / stride) cells, as a
    'same'-padded backbone's map has.
    """
    height, width = image_size
    out = []
    for level, stride in strides.items():
        rows, cols = -(-height // stride), -(-width // stride)
        shapes = [(base_sizes[level] * s * np.sqrt(r), base_sizes[level] * s / np.sqrt(r))
                  for s, r in itertools.product(scales, aspect_ratios)]
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride, indexing="ij")
        centres = np.stack([cy, cx], -1).reshape(-1, 1, 2)  # (cells, 1, 2)
        halves = np.asarray(shapes).reshape(1, -1, 2) / 2  # (1, per cell, 2)
        corners = np.concatenate([centres - halves, centres + halves], -1).reshape(-1, 4)
        out.append(corners / np.array([height, width, height, width]))
    return np.concatenate(out).astype(np.float32)


def anchors_per_cell(scales=(1.0,), aspect_ratios=(0.5, 1.0, 2.0)):
    """How many anchors each cell of a level holds."""
    return len(scales) * len(aspect_ratios)


def anchor_spec(image_size, strides, anchor_size=4.0, scales=(1.0, 1.26), aspect_ratios=(0.5, 1.0, 2.0)):
    """The anchors' description (plain data, saved in layer and loss configs): a level of stride s has anchors of
    side anchor_size * s at scale 1."""
    return {"image_size": [int(v) for v in image_size], "strides": {k: int(v) for k, v in strides.items()},
            "base_sizes": {k: float(anchor_size * v) for k, v in strides.items()},
            "scales": [float(s) for s in scales], "aspect_ratios": [float(r) for r in aspect_ratios]}


def anchors_of(spec):
    """The (A, 4) normalized anchors a spec describes."""
    return anchor_grid(spec["image_size"], spec["strides"], spec["base_sizes"], spec["scales"],
                       spec["aspect_ratios"])


def anchor_strides(spec):
    """Each anchor's level stride as a fraction of the image, (A, 2) float32 (height, width), in anchor order."""
    height, width = spec["image_size"]
    per_cell = anchors_per_cell(spec["scales"], spec["aspect_ratios"])
    out = [np.tile([[stride / height, stride / width]], (-(-height // stride) * -(-width // stride) * per_cell, 1))
           for stride in spec["strides"].values()]
    return np.concatenate(out).astype(np.float32)
