"""shapes: a seeded procedural dataset of circles, rectangles, triangles and stars, written as real COCO files.

Every object carries a class, a box, an instance mask (COCO polygon) and five keypoints (centre and the
top-, right-, bottom- and left-most points of the outline), so the same files serve classification,
localization, detection, segmentation and keypoint tasks. Shapes sit on textured backgrounds (smooth colour
noise, gradients or stripes, plus pixel noise) so that a model has to look at the outline, not at a flat
colour. Masks are rasterized from the stored polygon by pycocotools itself, so the pixels in the image,
the mask a reader decodes and the box are the same set by construction.

Layout written by generate_shapes(out_dir)::

    out_dir/images/train/000000.png ...         out_dir/annotations/instances_train.json
    out_dir/images/val/000000.png ...           out_dir/annotations/instances_val.json

Examples:
    >>> splits = ensure_shapes("/tmp/shapes", n=200, size=64)         # doctest: +SKIP
    >>> records = coco(*splits["train"])                              # doctest: +SKIP
    >>> records.class_names                                            # doctest: +SKIP
    ['circle', 'rectangle', 'triangle', 'star']
"""
import concurrent.futures
import hashlib
import json
import os
import shutil
import uuid
import warnings
from typing import NamedTuple

import numpy as np

from convforge.errors import DataError, close_matches

SHAPE_CLASSES = ("circle", "rectangle", "triangle", "star")
KEYPOINT_NAMES = ("center", "top", "right", "bottom", "left")
SKELETON = [[1, 2], [1, 3], [1, 4], [1, 5]]  # 1-based, centre to each extremal point
DESCRIPTION = "convforge procedural shapes"
VERSION = 1  # bump when the drawing changes, so ensure_shapes regenerates stale copies
SPLITS = ("train", "val")


class CocoSplit(NamedTuple):
    """The two paths coco() takes for one split."""

    annotations: str
    images_root: str


# Outlines of unit size around the origin, as (N, 2) vertex arrays; a new shape class is one more entry.
def _circle(rng):
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def _rectangle(rng):
    half_w, half_h = 1.0, rng.uniform(0.45, 0.9)
    if rng.random() < 0.5:
        half_w, half_h = half_h, half_w
    return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])


def _triangle(rng):
    angles = np.deg2rad([-90.0, 30.0, 150.0])
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def _star(rng):
    angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
    radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


OUTLINES = {"circle": _circle, "rectangle": _rectangle, "triangle": _triangle, "star": _star}


def _smooth_noise(rng, size):
    """A smooth random colour field: a 4x4 grid of colours upsampled bilinearly."""
    from PIL import Image

    grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), np.float32)


def _gradient(rng, size):
    """A linear blend between two random colours along a random direction."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    c0, c1 = rng.uniform(0, 255, (2, 3))
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)


def _stripes(rng, size):
    """Hard stripes of two random colours with a random period and direction."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, max(8, size / 4))
    on = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period) > 0
    c0, c1 = rng.uniform(0, 255, (2, 3))
    return np.where(on[..., None], c0, c1).astype(np.float32)


BACKGROUNDS = {"noise": _smooth_noise, "gradient": _gradient, "stripes": _stripes}


def _place(rng, outline, size, radius_range, taken, rotate):
    """Scale, rotate and move an outline to a spot clear of earlier boxes; None when none is found."""
    for _ in range(30):
        radius = rng.uniform(*radius_range) * size
        angle = rng.uniform(0, 2 * np.pi) if rotate else 0.0
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = outline @ rotation.T * radius
        low, high = points.min(0), points.max(0)
        # Keep a one-pixel margin so every keypoint and mask pixel lies inside the image.
        if np.any(high - low > size - 3):
            continue
        centre = rng.uniform(1 - low, size - 2 - high)
        box = np.concatenate([centre + low, centre + high])
        if all(box[0] > t[2] + 1 or box[2] < t[0] - 1 or box[1] > t[3] + 1 or box[3] < t[1] - 1
               for t in taken):
            return centre, points + centre, box
    return None


def _draw_image(rng, size, classes, objects_range, rotate, first_class):
    """One image as (uint8 array, [object annotation dicts without ids])."""
    from pycocotools import mask as mask_utils

    image = BACKGROUNDS[list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]](rng, size)
    count = int(rng.integers(objects_range[0], objects_range[1] + 1))
    radius_range = (0.15, 0.42) if count == 1 else (0.08, 0.3 / np.sqrt(count) + 0.08)
    taken, annotations = [], []
    for k in range(count):
        category = first_class if k == 0 else int(rng.integers(len(classes)))
        placed = _place(rng, OUTLINES[classes[category]](rng), size, radius_range, taken, rotate)
        if placed is None:
            continue
        centre, points, box = placed
        taken.append(box)
        polygon = [round(float(v), 2) for v in points.reshape(-1)]
        rle = mask_utils.merge(mask_utils.frPyObjects([polygon], size, size))
        mask = mask_utils.decode(rle).astype(bool)
        if not mask.any():
            continue
        # A colour far from the background under the shape keeps the task about outlines, not luck.
        under = image[mask].mean(0)
        colour = rng.uniform(0, 255, 3)
        for _ in range(8):
            if np.abs(colour - under).sum() > 150:
                break
            colour = rng.uniform(0, 255, 3)
        shade = rng.uniform(-25, 25) * (np.arange(size, dtype=np.float32) / size - 0.5)
        image[mask] = colour + shade[np.nonzero(mask)[0], None]
        extremes = [points[points[:, 1].argmin()], points[points[:, 0].argmax()],
                    points[points[:, 1].argmax()], points[points[:, 0].argmin()]]
        keypoints = []
        for x, y in [centre, *extremes]:
            keypoints += [round(float(x), 2), round(float(y), 2), 2]
        annotations.append({"category_id": category + 1, "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                            "area": float(mask_utils.area(rle)), "iscrowd": 0, "segmentation": [polygon],
                            "keypoints": keypoints, "num_keypoints": len(KEYPOINT_NAMES)})
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), annotations


def _params(n, size, seed, val_fraction, objects, classes, rotate):
    """Validate the generator's arguments and return them as the JSON-ready dict stored in `info`."""
    classes = list(classes)
    for name in classes:
        if name not in OUTLINES:
            raise DataError(f"shape class {name!r} is not one of {', '.join(OUTLINES)}"
                            f"{close_matches(name, OUTLINES)}")
    if not classes or len(set(classes)) != len(classes):
        raise DataError(f"shapes classes={classes} must name at least one shape, each once")
    lo, hi = (objects, objects) if isinstance(objects, int) else tuple(objects)
    if not (1 <= lo <= hi):
        raise DataError(f"shapes objects={objects!r} must be (min, max) object counts with 1 <= min <= max")
    if not (isinstance(n, int) and n >= 1 and isinstance(size, int) and size >= 16):
        raise DataError(f"shapes n={n!r} must be a positive integer and size={size!r} an integer >= 16")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"shapes val_fraction={val_fraction} must lie in [0, 1)")
    return {"n": n, "size": size, "seed": int(seed), "val_fraction": float(val_fraction),
            "objects": [int(lo), int(hi)], "classes": classes, "rotate": bool(rotate), "version": VERSION}


def _write_split(folder, split, params, first_id):
    """Draw and save one split's images and its COCO JSON inside `folder`; return the next free image id."""
    from PIL import Image

    n_val = int(round(params["n"] * params["val_fraction"]))
    n = params["n"] - n_val if split == "train" else n_val
    split_key = SPLITS.index(split)
    classes = params["classes"]
    # Image k's main shape comes from a shuffled, evenly repeated class list, so classes stay balanced.
    firsts = np.random.default_rng([params["seed"], split_key]).permutation(np.arange(n) % len(classes))
    image_dir = os.path.join(folder, "images", split)
    os.makedirs(image_dir)
    images, annotations, saves = [], [], []
    # PNG encoding and file writes release the GIL, so a writer thread overlaps them with the drawing.
    with concurrent.futures.ThreadPoolExecutor(2) as writer:
        for k in range(n):
            rng = np.random.default_rng([params["seed"], split_key, k])
            pixels, objects = _draw_image(rng, params["size"], classes, params["objects"], params["rotate"],
                                          int(firsts[k]))
            name = f"{k:06d}.png"
            # Fast zlib level: noisy textures barely compress anyway, and encoding dominates the run time.
            saves.append(writer.submit(Image.fromarray(pixels).save, os.path.join(image_dir, name),
                                       compress_level=1))
            image_id = first_id + k
            images.append({"id": image_id, "file_name": name, "width": params["size"],
                           "height": params["size"]})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
        for save in saves:
            save.result()
    coco = {"info": {"description": DESCRIPTION, "version": str(VERSION), "split": split, "params": params},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": name, "supercategory": "shape",
                            "keypoints": list(KEYPOINT_NAMES), "skeleton": SKELETON}
                           for i, name in enumerate(classes)]}
    with open(os.path.join(folder, "annotations", f"instances_{split}.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(coco))  # dumps uses the C encoder; dump streams through the pure-Python one
    return first_id + n


def _splits(out_dir):
    """The CocoSplit of each split under out_dir."""
    return {s: CocoSplit(os.path.join(out_dir, "annotations", f"instances_{s}.json"),
                         os.path.join(out_dir, "images", s)) for s in SPLITS}


def _stored_params(out_dir):
    """The params recorded in an existing shapes dataset, or None when out_dir holds no complete one."""
    found = None
    for split, (annotations, images_root) in _splits(out_dir).items():
        try:
            with open(annotations, encoding="utf-8") as f:
                info = json.load(f).get("info", {})
        except (OSError, ValueError):
            return None
        if info.get("description") != DESCRIPTION or (found is not None and info.get("params") != found):
            return None
        found = info.get("params")
        if not isinstance(found, dict) or not {"n", "val_fraction"} <= set(found):
            return None
        n_val = int(round(found["n"] * found["val_fraction"]))
        expected = found["n"] - n_val if split == "train" else n_val
        if not os.path.isdir(images_root) or len(os.listdir(images_root)) != expected:
            return None
    return found


def generate_shapes(out_dir, n=2000, size=64, seed=0, val_fraction=0.2, objects=(1, 1),
                    classes=SHAPE_CLASSES, rotate=True):
    """Write a shapes dataset of `n` images (split into train/val) to out_dir as COCO files; return the splits.

    The same arguments always give byte-identical files. Everything is written into a temporary folder next
    to out_dir and renamed into place at the end, so a crash never leaves a half-written dataset. An existing
    out_dir is replaced only when it holds an earlier shapes dataset; any other folder raises DataError.

    Args:
        n: total images; val takes round(n * val_fraction) of them.
        size: image side in pixels (square RGB PNGs).
        objects: (min, max) shapes per image; (1, 1) gives one shape for classification and localization.
        classes: shape names to draw, a subset of SHAPE_CLASSES; class ids follow this order.
        rotate: rotate rectangles, triangles and stars by a random angle.
    """
    params = _params(n, size, seed, val_fraction, objects, classes, rotate)
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    if os.path.exists(out_dir) and os.listdir(out_dir) and _stored_params(out_dir) is None:
        raise DataError(f"{out_dir} exists and is not a shapes dataset; pass an empty or new folder to "
                        f"generate_shapes")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{tag}")
    old = os.path.join(parent, f".{os.path.basename(out_dir)}.old-{tag}")
    try:
        os.makedirs(os.path.join(temp, "annotations"))
        next_id = 1
        with warnings.catch_warnings():
            # pycocotools 2.0 decodes through an __array__ without numpy 2's copy keyword; harmless here.
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            for split in SPLITS:
                next_id = _write_split(temp, split, params, next_id)
        if os.path.exists(out_dir):
            os.rename(out_dir, old)
        os.rename(temp, out_dir)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return _splits(out_dir)


def ensure_shapes(out_dir, **kwargs):
    """Return the splits of the shapes dataset in out_dir, generating it unless it exists with these arguments."""
    defaults = dict(n=2000, size=64, seed=0, val_fraction=0.2, objects=(1, 1), classes=SHAPE_CLASSES, rotate=True)
    unknown = set(kwargs) - set(defaults)
    if unknown:
        name = sorted(unknown)[0]
        raise DataError(f"ensure_shapes got an unknown argument {name!r}{close_matches(name, defaults)}; "
                        f"accepted: {', '.join(defaults)}")
    params = _params(**{**defaults, **kwargs})
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    if _stored_params(out_dir) == params:
        return _splits(out_dir)
    try:
        return generate_shapes(out_dir, **{**defaults, **kwargs})
    except OSError:
        # Another process may have renamed the same dataset into place first; theirs is as good as ours.
        if _stored_params(out_dir) == params:
            return _splits(out_dir)
        raise


def default_dir(**kwargs):
    """The cache folder for a shapes dataset with these arguments: $CONVFORGE_DATA or ~/.cache/convforge."""
    key = hashlib.sha1(json.dumps(kwargs, sort_keys=True, default=list).encode()).hexdigest()[:10]
    base = os.environ.get("CONVFORGE_DATA", os.path.join("~", ".cache", "convforge"))
    return os.path.join(os.path.expanduser(base), f"shapes-{key}")


def load_shapes(split="train", out_dir=None, strict=False, **kwargs):
    """The shapes source: ensure the dataset exists (see generate_shapes for kwargs), then load it with coco()."""
    from convforge.data.sources.coco import coco

    if split not in SPLITS:
        raise DataError(f"shapes split {split!r} is not one of {', '.join(SPLITS)}{close_matches(split, SPLITS)}")
    out_dir = out_dir or default_dir(**kwargs)
    return coco(*ensure_shapes(out_dir, **kwargs)[split], strict=strict)
