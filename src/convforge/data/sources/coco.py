"""coco: a COCO instances JSON (boxes, polygons/RLE masks, keypoints, iscrowd) and its image folder.

The JSON is read with the standard json module rather than pycocotools.coco.COCO: we need only one pass
grouping annotations by image, and COCO() prints to stdout while indexing. Masks stay in their COCO form
(polygon lists or RLE dicts) for pycocotools.mask to decode where a task needs pixels.
"""
import collections
import json

from convforge.data.records import Skips, inspect_images, largest_object, require_path, resolve_inside
from convforge.errors import DataError


def _load_json(path, source):
    """Parse the annotation file, turning a syntax error into a DataError that names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file {path} of {source} is not valid JSON ({exc}); "
                        f"expected a COCO instances file") from None
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} of {source} holds a {type(data).__name__}; "
                        f"expected a COCO object with 'images', 'annotations' and 'categories'")
    for field in ("images", "categories"):
        if not isinstance(data.get(field), list):
            raise DataError(f"annotation file {path} has no '{field}' list; "
                            f"a COCO instances file needs 'images', 'annotations' and 'categories'")
    for i, category in enumerate(data["categories"]):
        if not (isinstance(category, dict) and isinstance(category.get("id"), int)):
            raise DataError(f"annotation file {path} has categories[{i}] = {category!r}; "
                            f"expected an object with an integer 'id' and a 'name'")
    for i, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and "id" in image):
            raise DataError(f"annotation file {path} has images[{i}] = {image!r}; "
                            f"expected an object with 'id', 'file_name', 'width' and 'height'")
    return data


def _object(ann, category_index):
    """One COCO annotation as a record object (contiguous category id), or a reason to skip it."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        return f"annotation {ann.get('id')} has bbox {bbox!r}; expected [x, y, width, height]"
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0):
        return f"annotation {ann.get('id')} has an empty bbox {bbox}"
    if ann.get("category_id") not in category_index:
        return f"annotation {ann.get('id')} has category_id {ann.get('category_id')!r}, not in 'categories'"
    obj = {"id": ann.get("id"), "category_id": category_index[ann["category_id"]], "bbox": [x, y, w, h],
           "area": float(ann.get("area", w * h)), "iscrowd": int(ann.get("iscrowd", 0))}
    if ann.get("segmentation"):
        obj["segmentation"] = ann["segmentation"]
    if ann.get("keypoints"):
        obj["keypoints"] = [float(v) for v in ann["keypoints"]]
    return obj


def coco(annotations, images_root, strict=False):
    """Load a COCO instances JSON; categories become contiguous ids 0..K-1 in order of COCO category id.

    Each image's `label` is the category of its largest non-crowd object (by box area), or None for images
    without one. `Records.category_ids[k]` keeps the original COCO id of class k for evaluation, and
    `Records.annotations_file` the JSON itself when nothing was skipped. Images whose
    `file_name` is absolute or climbs out of `images_root` (`../`), unreadable images, images whose size
    differs from the JSON, and annotations without a usable bbox are skipped with one warning, or raise
    DataError when `strict`.

    Examples:
        >>> records = coco("annotations/instances_val2017.json", "val2017")  # doctest: +SKIP
        >>> records[0]["objects"][0]["bbox"]                               # doctest: +SKIP
        [473.07, 395.93, 38.65, 28.67]
    """
    source = f"coco({annotations})"
    ann_path = require_path(annotations, "annotation file", source)
    root = require_path(images_root, "images folder", source)
    data = _load_json(ann_path, source)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if not categories:
        raise DataError(f"annotation file {ann_path} has an empty 'categories' list; expected at least one")
    category_index = {c["id"]: k for k, c in enumerate(categories)}
    keypoint_names = next((c["keypoints"] for c in categories if c.get("keypoints")), None)

    skips = Skips(source, strict)
    image_ids = {im.get("id") for im in data["images"]}
    by_image = collections.defaultdict(list)
    for ann in data.get("annotations") or []:
        if ann.get("image_id") not in image_ids:
            skips.add(ann_path, f"annotation {ann.get('id')} refers to image_id {ann.get('image_id')!r}, "
                                f"not in 'images'")
            continue
        by_image[ann["image_id"]].append(ann)

    candidates = []
    for image in data["images"]:
        name = image.get("file_name")
        path = resolve_inside(root, name) if isinstance(name, str) else None
        if path is None:
            skips.add(name, f"file_name points outside the images folder {root}")
            continue
        candidates.append((image, path))

    records = []
    for (image, path), size in zip(candidates, inspect_images(p for _, p in candidates)):
        if isinstance(size, str):
            skips.add(path, size)
            continue
        declared = (image.get("width", size[0]), image.get("height", size[1]))
        if tuple(size) != tuple(declared):
            skips.add(path, f"image is {size[0]}x{size[1]} but the JSON says {declared[0]}x{declared[1]}")
            continue
        objects = []
        for ann in by_image.get(image["id"], ()):
            obj = _object(ann, category_index)
            if isinstance(obj, str):
                skips.add(path, obj)
            else:
                objects.append(obj)
        largest = largest_object(objects)
        records.append({"image_path": path, "image_id": image["id"], "width": size[0], "height": size[1],
                        "label": None if largest is None else largest["category_id"], "objects": objects})
    # The file is the ground truth to score against only when the records hold all of it, areas included
    # (COCOeval reads each annotation's area); otherwise evaluation builds it from the records.
    whole = not skips.items and all("area" in ann for ann in data.get("annotations") or [])
    return skips.finish(records, [c.get("name", str(c["id"])) for c in categories],
                        category_ids=[c["id"] for c in categories], keypoint_names=keypoint_names,
                        annotations_file=ann_path if whole else None)
