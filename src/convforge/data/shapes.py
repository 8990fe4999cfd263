"""shapes: a seeded procedural dataset of circles, rectangles, triangles and stars, written as real COCO files.

Every object carries a class, a box, an instance mask (COCO polygon) and five keypoints (centre and the
top-, right-, bottom- and left-most points of the outline), so the same files serve classification,
localization, detection, segmentation and keypoint tasks. Shapes sit on textured backgrounds (smooth colour
noise, gradients or stripes, plus pixel noise) so that a model has to look at the outline, not at a flat
colour. Masks are rasterized from the stored polygon by pycocotools itself, so the pixels in the image,
the mask a reader decodes and the box are the same set by construction.

`style="flat"` renders the very same scenes (same seed: same shapes, places and colours) without texture: the
background is its mean colour, the shapes unshaded, no pixel noise. Both renderings draw the same random numbers,
so a flat and a textured set of one seed are pairs picture for picture (ground truth for image translation),
while sets of two seeds share no scene (unpaired training).

Layout written by generate_shapes(out_dir)::

    out_dir/images/train/000000.png ...         out_dir/annotations/instances_train.json
    out_dir/images/val/000000.png ...           out_dir/annotations/instances_val.json

Examples:
    >>> splits = ensure_shapes("/tmp/shapes", n=200, size=64)         # doctest: +SKIP
    >>> records = coco(*splits["train"])                              # doctest: +SKIP
    >>> records.class_names                                            # doctest: +SKIP
    ['circle', 'rectangle', 'triangle', 'star']
"""
import numpy as np

from convforge.data import synthetic
from convforge.data.synthetic import SPLITS
from convforge.errors import DataError, close_matches

SHAPE_CLASSES = ("circle", "rectangle", "triangle", "star")
KEYPOINT_NAMES = ("center", "top", "right", "bottom", "left")
SKELETON = [[1, 2], [1, 3], [1, 4], [1, 5]]  # 1-based, centre to each extremal point
DESCRIPTION = "convforge procedural shapes"
VERSION = 1  # bump when the drawing changes, so ensure_shapes regenerates stale copies
STYLES = ("textured", "flat")

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


def _draw_image(rng, size, classes, objects_range, rotate, first_class, style="textured"):
    """One image as (uint8 array, [object annotation dicts without ids]) in the given style; every choice is made
    on the textured rendering, so both styles draw the same random numbers and the same scene."""
    from pycocotools import mask as mask_utils

    image = synthetic.background(rng, size)
    flat = np.broadcast_to(image.reshape(-1, 3).mean(0), image.shape).copy()
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
        flat[mask] = colour
        extremes = [points[points[:, 1].argmin()], points[points[:, 0].argmax()],
                    points[points[:, 1].argmax()], points[points[:, 0].argmin()]]
        keypoints = []
        for x, y in [centre, *extremes]:
            keypoints += [round(float(x), 2), round(float(y), 2), 2]
        annotations.append({"category_id": category + 1, "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                            "area": float(mask_utils.area(rle)), "iscrowd": 0, "segmentation": [polygon],
                            "keypoints": keypoints, "num_keypoints": len(KEYPOINT_NAMES)})
    image += rng.normal(0, 6, image.shape)
    picture = flat if style == "flat" else image
    return np.clip(np.round(picture), 0, 255).astype(np.uint8), annotations


def _params(n=2000, size=64, seed=0, val_fraction=0.2, objects=(1, 1), classes=SHAPE_CLASSES, rotate=True,
            style="textured"):
    """Validate the generator's arguments and return them as the JSON-ready dict stored in `info`."""
    if style not in STYLES:
        raise DataError(f"shapes style={style!r} is not accepted; accepted: {', '.join(STYLES)}"
                        f"{close_matches(str(style), STYLES)}")
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
    synthetic.check_common("shapes", n, size, val_fraction)
    params = {"n": n, "size": size, "seed": int(seed), "val_fraction": float(val_fraction),
              "objects": [int(lo), int(hi)], "classes": classes, "rotate": bool(rotate), "version": VERSION}
    if style != "textured":  # the textured default keeps the files (and caches) it always had
        params["style"] = style
    return params


def _draw_split(params, split, n):
    """The images of one split, each with its annotations."""
    split_key = SPLITS.index(split)
    classes = params["classes"]
    # Image k's main shape comes from a shuffled, evenly repeated class list, so classes stay balanced.
    firsts = np.random.default_rng([params["seed"], split_key]).permutation(np.arange(n) % len(classes))
    for k in range(n):
        rng = np.random.default_rng([params["seed"], split_key, k])
        yield _draw_image(rng, params["size"], classes, params["objects"], params["rotate"], int(firsts[k]),
                          params.get("style", "textured"))


def _categories(params):
    """One COCO category per shape class, each with the five keypoints."""
    return [{"id": i + 1, "name": name, "supercategory": "shape", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": SKELETON} for i, name in enumerate(params["classes"])]


GENERATOR = synthetic.Synthetic("shapes", DESCRIPTION, _params, _draw_split, _categories)


def generate_shapes(out_dir, n=2000, size=64, seed=0, val_fraction=0.2, objects=(1, 1),
                    classes=SHAPE_CLASSES, rotate=True, style="textured"):
    """Write a shapes dataset of `n` images (split into train/val) to out_dir as COCO files; return the splits.

    The same arguments always give byte-identical files, written atomically (data.synthetic.generate). An
    existing out_dir is replaced only when it holds an earlier shapes dataset; any other folder raises DataError.

    Args:
        n: total images; val takes round(n * val_fraction) of them.
        size: image side in pixels (square RGB PNGs).
        objects: (min, max) shapes per image; (1, 1) gives one shape for classification and localization.
        classes: shape names to draw, a subset of SHAPE_CLASSES; class ids follow this order.
        rotate: rotate rectangles, triangles and stars by a random angle.
        style: "textured" (noisy backgrounds, shaded shapes) or "flat" (the same scenes in flat colours).
    """
    return synthetic.generate(GENERATOR, out_dir, n=n, size=size, seed=seed, val_fraction=val_fraction,
                              objects=objects, classes=classes, rotate=rotate, style=style)


def ensure_shapes(out_dir, **kwargs):
    """Return the splits of the shapes dataset in out_dir, generating it unless it exists with these arguments."""
    return synthetic.ensure(GENERATOR, out_dir, **kwargs)


def default_dir(**kwargs):
    """The cache folder for a shapes dataset with these arguments: $CONVFORGE_DATA or ~/.cache/convforge."""
    return synthetic.default_dir(GENERATOR, **kwargs)


def load_shapes(split="train", out_dir=None, strict=False, **kwargs):
    """The shapes source: ensure the dataset exists (see generate_shapes for kwargs), then load it with coco()."""
    return synthetic.load(GENERATOR, split, out_dir, strict, **kwargs)
