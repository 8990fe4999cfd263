"""Per-object annotations for multi-instance tasks: masks rasterized at the training size, keypoints, padding.

Every example dict the pipeline builds (from Records or TFRecord) carries, per object, its box, class, crowd
flag, its `segmentation` as COCO JSON text (polygons, uncompressed or compressed RLE; "" when it has none) and
its `keypoints` (K, 3) as normalized x, y and COCO visibility v (0 absent, 1 occluded, 2 visible). A task whose
annotations include "masks" gets them rasterized here, straight at the training size, by pycocotools (the
reference COCO rasterizer, so pixels agree with COCO's evaluation); `pad_instances` then pads every kind to
`max_instances` with a `valid` mask, so examples with 2 or 50 objects batch alike.

Keypoint flips swap left and right points: `flip_pairs` derives the pairs from the dataset's keypoint names
("left_eye"/"right_eye", "left"/"right"), as COCO's own person keypoints are named.
"""
import dataclasses
import json

import numpy as np

from convforge.errors import DataError

INSTANCE_KINDS = ("boxes", "masks", "keypoints")
DEFAULT_MAX_INSTANCES = 100


@dataclasses.dataclass(frozen=True)
class ParseContext:
    """What a task's parser may need besides the example: the training size and the padding bounds."""

    height: int
    width: int
    max_instances: int = DEFAULT_MAX_INSTANCES
    num_keypoints: int = 0


def rasterize(segmentation, height, width, out_height, out_width):
    """One object's COCO segmentation (polygons, RLE dict or its JSON text) as a uint8 0/1 mask at the output
    size; an empty segmentation gives zeros.

    Polygons are scaled to the output size before rasterizing (exact edges at any size); RLE is decoded at the
    image's size and resized by nearest neighbour.
    """
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, (bytes, str)):
        segmentation = json.loads(segmentation) if len(segmentation) else None
    if not segmentation:
        return np.zeros((out_height, out_width), np.uint8)
    if isinstance(segmentation, list):
        sx, sy = out_width / width, out_height / height
        polygons = [np.asarray(p, np.float64).reshape(-1, 2) * (sx, sy) for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((out_height, out_width), np.uint8)
        rles = coco_mask.frPyObjects([p.reshape(-1).tolist() for p in polygons], out_height, out_width)
        return coco_mask.decode(coco_mask.merge(rles)).astype(np.uint8)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = coco_mask.frPyObjects(rle, *rle["size"])
        full = coco_mask.decode(rle).astype(np.uint8)
        rows = (np.arange(out_height) * full.shape[0] // out_height).clip(0, full.shape[0] - 1)
        cols = (np.arange(out_width) * full.shape[1] // out_width).clip(0, full.shape[1] - 1)
        return full[rows][:, cols]
    raise DataError(f"segmentation {str(segmentation)[:60]!r} is neither COCO polygons nor RLE; accepted: "
                    f"[[x1, y1, x2, y2, ...], ...] or {{'size': [h, w], 'counts': ...}}")


def rasterize_all(segmentations, height, width, out_height, out_width):
    """(N,) segmentation JSON strings -> uint8 masks (N, out_height, out_width) (for tf.numpy_function)."""
    masks = [rasterize(s, int(height), int(width), int(out_height), int(out_width)) for s in segmentations]
    if not masks:
        return np.zeros((0, int(out_height), int(out_width)), np.uint8)
    return np.stack(masks)


def segmentation_text(obj):
    """An object's segmentation as the JSON text examples carry ("" when it has none)."""
    segmentation = obj.get("segmentation")
    return json.dumps(segmentation, separators=(",", ":")) if segmentation else ""


def keypoints_array(obj, width, height, num_keypoints):
    """An object's COCO keypoints [x, y, v, ...] in pixels as (K, 3) float32: x, y normalized to 0..1 and v."""
    values = np.zeros((num_keypoints, 3), np.float32)
    raw = obj.get("keypoints")
    if raw is not None and num_keypoints:
        raw = np.asarray(raw, np.float32).reshape(-1, 3)[:num_keypoints]
        values[:len(raw)] = raw
        values[:, 0] /= width
        values[:, 1] /= height
        values[values[:, 2] == 0, :2] = 0.0  # absent points carry no position
    return values


def flip_pairs(names):
    """Index pairs of keypoints a horizontal flip swaps, from names such as 'left_eye'/'right_eye' or
    'left'/'right'; unpaired names (nose, centre) stay where they are."""
    names = list(names or ())
    pairs = []
    for i, name in enumerate(names):
        if "left" in name:
            mirror = name.replace("left", "right")
            if mirror in names:
                pairs.append((i, names.index(mirror)))
    return pairs


def largest_box_index(boxes, eligible):
    """Index of the largest of an example's boxes (N, 4) normalized yxyx among the `eligible` (N,) ones (a
    normalized area ranks like a pixel area); 0 when none is."""
    import tensorflow as tf

    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return tf.argmax(tf.where(eligible, area, -1.0), output_type=tf.int32)


def skeleton_of(names):
    """The skeleton (COCO's 1-based index pairs) of a known keypoint layout by its names: the 300-W face
    landmarks (68 or the 5-point subset), COCO's 17 person keypoints and the shapes set's points; [] for any
    other."""
    from convforge.data import faces, figures, shapes

    names = tuple(names or ())
    if names and set(names) <= set(faces.LANDMARK_NAMES):
        return faces.skeleton([faces.LANDMARK_NAMES.index(n) for n in names])
    if names == figures.KEYPOINT_NAMES:
        return [list(p) for p in figures.SKELETON]
    if names == tuple(shapes.KEYPOINT_NAMES):
        return [list(p) for p in shapes.SKELETON]
    return []


def pad_instances(example, ctx, kinds=("boxes",)):
    """The example's objects as fixed-size tensors padded to ctx.max_instances (the first ones kept).

    Returns {"boxes" (M, 4) normalized [ymin, xmin, ymax, xmax], "classes" (M,) int32 (-1 when padding),
    "is_crowd" (M,) bool, "valid" (M,) bool, "num_instances" () int32} and, when asked in `kinds`,
    "masks" (M, H, W) uint8 at the training size (the example's "masks", already rasterized) and
    "keypoints" (M, K, 3) float32.
    """
    import tensorflow as tf

    m = ctx.max_instances
    count = tf.minimum(tf.shape(example["classes"])[0], m)
    pad = m - count

    def fit(values, fill):
        """The first `count` rows of values, padded with `fill` to M rows."""
        values = values[:count]
        paddings = [[0, pad]] + [[0, 0]] * (len(values.shape) - 1)
        return tf.pad(values, paddings, constant_values=fill)

    out = {"boxes": tf.ensure_shape(fit(tf.cast(example["boxes"], tf.float32), 0.0), [m, 4]),
           "classes": tf.ensure_shape(fit(tf.cast(example["classes"], tf.int32), -1), [m]),
           "is_crowd": tf.ensure_shape(fit(example["is_crowd"], False), [m]),
           "valid": tf.range(m) < count, "num_instances": count}
    if "masks" in kinds:
        out["masks"] = tf.ensure_shape(fit(example["masks"], 0), [m, ctx.height, ctx.width])
    if "keypoints" in kinds:
        out["keypoints"] = tf.ensure_shape(fit(tf.cast(example["keypoints"], tf.float32), 0.0),
                                           [m, ctx.num_keypoints, 3])
    return out


def paste_masks(masks, boxes, height, width, threshold=0.5):
    """Masks (N, M, M) in their boxes' frames (boxes (N, 4) normalized yxyx) pasted into a height x width image:
    (N, height, width) bool, each pixel bilinearly sampled from its mask (RoIAlign's inverse) and kept at
    `threshold`; pixels outside a box are False."""
    masks, boxes = np.asarray(masks, np.float32), np.asarray(boxes, np.float32)
    if not len(masks):
        return np.zeros((0, height, width), bool)
    size = masks.shape[-1]

    def weights(low, high, pixels):
        """(N, pixels, M): bilinear weights of each pixel centre on the mask cells along one side; zero outside."""
        extent = np.maximum(high - low, 1e-6)[:, None]
        centres = (np.arange(pixels, dtype=np.float32) + 0.5) / pixels  # normalized pixel centres
        position = (centres[None] - low[:, None]) / extent * size - 0.5  # in mask cells
        inside = (centres[None] >= low[:, None]) & (centres[None] < high[:, None])
        position = np.clip(position, 0, size - 1)
        tent = np.maximum(0, 1 - np.abs(position[..., None] - np.arange(size, dtype=np.float32)))
        return tent * inside[..., None]

    rows = weights(boxes[:, 0], boxes[:, 2], height)  # (N, H, M)
    cols = weights(boxes[:, 1], boxes[:, 3], width)  # (N, W, M)
    return np.einsum("nhm,nmk,nwk->nhw", rows, masks, cols) >= threshold


def encode_rle(mask):
    """A 0/1 (H, W) mask as COCO compressed RLE with JSON-ready counts (pycocotools' encoder)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def crop_box(bbox, padding, aspect, width=None, height=None):
    """An object's [x, y, w, h] pixel box grown by `padding` about its centre, then widened or heightened to
    `aspect` (width / height), as top-down pose models crop people: (x0, y0, x1, y1) in pixels, which may
    reach outside the image (the crop is filled with black there)."""
    x, y, w, h = (float(v) for v in bbox)
    cx, cy = x + w / 2, y + h / 2
    w, h = max(w, 1.0) * padding, max(h, 1.0) * padding
    if w > aspect * h:
        h = w / aspect
    else:
        w = aspect * h
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def crop_view(record, obj, padding, aspect):
    """The record as seen through one object's crop (crop_box): only that object, its box and keypoints in the
    crop's pixels (points that fall outside it unlabelled), the crop's size as the view's size and the crop as
    a normalized [ymin, xmin, ymax, xmax] box of the image under "crop" (the image's own size under
    "image_width" and "image_height")."""
    x0, y0, x1, y1 = crop_box(obj["bbox"], padding, aspect)
    w, h = x1 - x0, y1 - y0
    moved = dict(obj)
    bx, by, bw, bh = obj["bbox"]
    moved["bbox"] = [bx - x0, by - y0, bw, bh]
    if obj.get("keypoints"):
        points = np.asarray(obj["keypoints"], np.float64).reshape(-1, 3).copy()
        points[:, 0] -= x0
        points[:, 1] -= y0
        outside = (points[:, 0] < 0) | (points[:, 0] >= w) | (points[:, 1] < 0) | (points[:, 1] >= h)
        points[outside | (points[:, 2] == 0)] = 0.0
        moved["keypoints"] = points.reshape(-1).tolist()
    moved.pop("segmentation", None)  # a view's masks are not cut (no task reads them from crops)
    return {**record, "objects": [moved], "width": w, "height": h, "image_width": record["width"],
            "image_height": record["height"],
            "crop": [y0 / record["height"], x0 / record["width"], y1 / record["height"], x1 / record["width"]]}


def from_crops(crops, points):
    """Points (P, K, 2) normalized to their crops (P, 4 yxyx in pixels of an image) as (P, K, 2) pixels of it."""
    crops, points = np.asarray(crops, np.float64).reshape(-1, 4), np.asarray(points, np.float64)
    origin, size = crops[:, None, 1::-1], (crops[:, 2:] - crops[:, :2])[:, None, ::-1]
    return origin + points * size
