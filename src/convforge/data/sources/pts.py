"""pts: face landmarks in the iBUG 300-W layout, each image beside a `.pts` file of the same name.

A `.pts` file reads::

    version: 1
    n_points:  68
    {
    446.000 91.000
    ...
    }

Each image with a `.pts` file becomes one record with one "face" object: its landmarks as COCO keypoints
(x, y, v = 2), its box the landmarks' extent. With 68 points they are named as data.faces names them (the
300-W order), so flips swap the mirror points and NME finds the outer eye corners; other counts are named
point_1 ... point_N. 300-W's coordinates are in pixels; `one_based=True` subtracts 1 for annotations
indexed from 1 (MATLAB tools).
"""
import os

from convforge.data.records import Skips, images_with_sidecars, inspect_images, require_path
from convforge.errors import DataError


def read_pts(path):
    """The points of one .pts file as a list of (x, y) floats; raise ValueError naming what is wrong."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    header = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    if "{" not in lines or "}" not in lines:
        raise ValueError("no '{' ... '}' block of points")
    body = lines[lines.index("{") + 1:lines.index("}")]
    points = []
    for line in body:
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"line {line!r} is not 'x y'")
        points.append((float(parts[0]), float(parts[1])))
    declared = header.get("n_points")
    if declared is not None and int(declared) != len(points):
        raise ValueError(f"n_points says {declared} but {len(points)} points follow")
    if not points:
        raise ValueError("no points")
    return points


def pts(path, strict=False, one_based=False):
    """Load a folder (searched recursively) of images with 300-W `.pts` landmark files beside them.

    Images without a .pts file, unreadable images, malformed .pts files and files whose point count differs
    from the first one's are skipped with one warning, or raise DataError when `strict`.

    Examples:
        >>> records = pts("300W/01_Indoor")        # doctest: +SKIP
        >>> len(records.keypoint_names)            # doctest: +SKIP
        68
    """
    from convforge.data.faces import LANDMARK_NAMES

    source = f"pts({path})"
    root = require_path(path, "folder", source)
    if not os.path.isdir(root):
        raise DataError(f"{root} of {source} is a file; pass the folder holding the images and their .pts files")
    skips = Skips(source, strict)
    candidates = [(image, points) for image, _, points in images_with_sidecars(root, ".pts", read_pts, skips)]
    count = len(candidates[0][1]) if candidates else 0
    records = []
    for (image, points), size in zip(candidates, inspect_images(p for p, _ in candidates)):
        if isinstance(size, str):
            skips.add(image, size)
            continue
        if len(points) != count:
            skips.add(image, f"has {len(points)} points where the first file has {count}")
            continue
        shift = 1.0 if one_based else 0.0
        xs, ys = [x - shift for x, _ in points], [y - shift for _, y in points]
        keypoints = []
        for x, y in zip(xs, ys):
            keypoints += [x, y, 2]
        box = [min(xs), min(ys), max(max(xs) - min(xs), 1.0), max(max(ys) - min(ys), 1.0)]
        records.append({"image_path": image, "image_id": len(records) + 1, "width": size[0], "height": size[1],
                        "label": 0, "objects": [{"id": len(records) + 1, "category_id": 0, "bbox": box,
                                                 "area": box[2] * box[3], "iscrowd": 0, "keypoints": keypoints}]})
    names = list(LANDMARK_NAMES) if count == 68 else [f"point_{i + 1}" for i in range(count)]
    return skips.finish(records, ["face"], keypoint_names=names)
