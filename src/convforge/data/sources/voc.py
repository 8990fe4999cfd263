"""voc: the Pascal VOC layout (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt), and its segmentation
masks (SegmentationClass/*.png, SegmentationObject/*.png, ImageSets/Segmentation/<split>.txt)."""
import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from convforge.data.instances import encode_rle
from convforge.data.records import Skips, inspect_images, largest_object, require_path, resolve_inside
from convforge.errors import DataError, close_matches

# The 20 VOC classes in the devkit's order (which is also alphabetical).
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _text(node, path, default=None):
    """The stripped text at an XPath below node, or default when absent."""
    found = node.find(path)
    return default if found is None or found.text is None else found.text.strip()


def _parse(xml_path):
    """One annotation file as (filename, (width, height) or None, [(name, xmin, ymin, xmax, ymax, difficult)])."""
    root = ElementTree.parse(xml_path).getroot()
    size = None
    if root.find("size") is not None:
        size = (int(float(_text(root, "size/width"))), int(float(_text(root, "size/height"))))
    objects = []
    for obj in root.iter("object"):
        box = [float(_text(obj, f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((_text(obj, "name"), *box, int(float(_text(obj, "difficult", "0")))))
    return _text(root, "filename"), size, objects


VOID = 255  # VOC masks' "void" value: object borders and unlabelled regions, which VOC's evaluation ignores
MASKS = ("class", "object")


def _split_ids(list_file):
    """The image ids of an ImageSets split list (the first word of each non-empty line)."""
    with open(list_file, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def _read_mask(path):
    """A VOC mask PNG as its (H, W) uint8 palette indices (the class or instance number of each pixel)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"mode {image.mode} is not a palette or greyscale mask (VOC masks are palette PNGs "
                             f"whose indices are the class numbers)")
        return np.asarray(image, dtype=np.uint8)


def _rle_object(mask, category_id, iscrowd=0):
    """A record object for a boolean (H, W) mask: COCO compressed RLE, its box and its area."""
    from pycocotools import mask as mask_utils

    rle = encode_rle(mask)
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {"category_id": category_id, "bbox": [x, y, w, h], "area": float(mask.sum()), "iscrowd": iscrowd,
            "segmentation": rle}


def _mask_objects(class_map, instance_map, num_classes):
    """Record objects from VOC masks (or a string saying why they cannot be used).

    class_map alone ("class"): one object per class present, its pixels as RLE, and the void pixels as one crowd
    object (class 0) that semantic segmentation labels with its ignore label. With instance_map ("object"): one
    object per instance number, its class the class map's at its pixels; void pixels belong to no object."""
    values = set(np.unique(class_map).tolist()) - {0, VOID}
    unknown = sorted(v for v in values if v > num_classes)
    if unknown:
        return f"class mask holds {unknown[:5]}, which are not class numbers 1..{num_classes} (0 background, " \
               f"{VOID} void)"
    if instance_map is None:
        objects = [_rle_object(class_map == v, v - 1) for v in sorted(values)]
        if (class_map == VOID).any():
            objects.append(_rle_object(class_map == VOID, 0, iscrowd=1))
        return objects
    if instance_map.shape != class_map.shape:
        return f"object mask is {instance_map.shape[::-1]} but the class mask is {class_map.shape[::-1]}"
    objects = []
    for number in sorted(set(np.unique(instance_map).tolist()) - {0, VOID}):
        pixels = instance_map == number
        classes = np.unique(class_map[pixels])
        classes = classes[(classes != 0) & (classes != VOID)]
        if len(classes) != 1:
            return f"instance {number} covers class numbers {classes.tolist()} in the class mask, not exactly one"
        objects.append(_rle_object(pixels, int(classes[0]) - 1))
    return objects


def _voc_masks(root, split, class_names, masks, skips):
    """The records of a VOC segmentation split, objects taken from its mask PNGs."""
    source = skips.source
    list_file = require_path(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "split list",
                             source)
    image_dir = require_path(os.path.join(root, "JPEGImages"), "images folder", source)
    folders = {"class": require_path(os.path.join(root, "SegmentationClass"), "class masks folder", source)}
    if masks == "object":
        folders["object"] = require_path(os.path.join(root, "SegmentationObject"), "object masks folder", source)
    ids = _split_ids(list_file)
    found = []
    for image_id in ids:
        image_path = resolve_inside(image_dir, image_id + ".jpg")
        if image_path is None:
            skips.add(image_id, "image id points outside the JPEGImages folder")
            continue
        found.append((image_id, image_path))
    records = []
    for (image_id, image_path), size in zip(found, inspect_images(p for _, p in found)):
        if isinstance(size, str):
            skips.add(image_path, size)
            continue
        maps = {}
        for kind, folder in folders.items():
            mask_path = os.path.join(folder, image_id + ".png")
            try:
                maps[kind] = _read_mask(mask_path)
            except FileNotFoundError:
                maps[kind] = f"{kind} mask {mask_path} not found"
            except (OSError, ValueError) as exc:
                maps[kind] = f"{kind} mask {mask_path} cannot be read ({exc})"
        problem = next((m for m in maps.values() if isinstance(m, str)), None)
        if problem is None and maps["class"].shape != (size[1], size[0]):
            problem = f"class mask is {maps['class'].shape[1]}x{maps['class'].shape[0]} but the image is " \
                      f"{size[0]}x{size[1]}"
        objects = problem or _mask_objects(maps["class"], maps.get("object"), len(class_names))
        if isinstance(objects, str):
            skips.add(image_path, objects)
            continue
        largest = largest_object(objects)
        records.append({"image_path": image_path, "image_id": image_id, "width": size[0], "height": size[1],
                        "label": None if largest is None else largest["category_id"], "objects": objects})
    return skips.finish(records, class_names)


def voc(root, split="train", classes="voc", strict=False, masks=None):
    """Load a Pascal VOC split; `difficult` objects get iscrowd=1, which evaluation ignores as VOC does.

    classes: "voc" (default) uses the standard 20 VOC classes in the devkit order, so ids match every VOC
    model; "found" uses the sorted names that occur in this split's annotations (for VOC-layout datasets
    with other classes); or an explicit list of names. An object whose name is not in the class list raises
    DataError. Boxes become COCO [x, y, w, h] with VOC's 1-based corners shifted to 0-based (x = xmin - 1,
    w = xmax - xmin + 1). Each image's `label` is the class of its largest non-difficult object.

    masks: None reads the boxes of Annotations/ (split from ImageSets/Main); "class" or "object" reads VOC's
    segmentation split (ImageSets/Segmentation) from its mask PNGs instead, pixel values being class numbers (1 =
    class_names[0], 0 background, 255 void): "class" gives one object per class present plus the void pixels as
    a crowd region (semantic segmentation ignores them), "object" one object per instance of
    SegmentationObject/ (instance segmentation and detection). Masks travel as COCO RLE.

    Examples:
        >>> records = voc("VOCdevkit/VOC2012", "val")  # doctest: +SKIP
        >>> records.class_names[14]                    # doctest: +SKIP
        'person'
    """
    source = f"voc({root}, {split!r})"
    root = require_path(root, "VOC folder", source)
    if masks is not None:
        if masks not in MASKS:
            raise DataError(f"masks={masks!r} for {source} is not accepted; accepted: None (boxes from "
                            f"Annotations/), {', '.join(repr(m) for m in MASKS)}")
        if classes == "voc":
            class_names = list(VOC_CLASSES)
        elif isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
            class_names = list(classes)
        else:
            raise DataError(f"classes={classes!r} for {source} with masks={masks!r} is not accepted: mask PNGs hold "
                            f"class numbers, not names; use 'voc' or the list of names of numbers 1, 2, ...")
        return _voc_masks(root, split, class_names, masks, Skips(source, strict))
    list_file = require_path(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "split list", source)
    ann_dir = require_path(os.path.join(root, "Annotations"), "annotations folder", source)
    image_dir = require_path(os.path.join(root, "JPEGImages"), "images folder", source)
    ids = _split_ids(list_file)

    skips = Skips(source, strict)
    parsed = []
    for image_id in ids:
        xml_path = resolve_inside(ann_dir, image_id + ".xml")
        if xml_path is None:
            skips.add(image_id, "image id points outside the Annotations folder")
            continue
        try:
            filename, size, objects = _parse(xml_path)
        except FileNotFoundError:
            skips.add(xml_path, "annotation file not found")
            continue
        except (ElementTree.ParseError, TypeError, ValueError) as exc:
            skips.add(xml_path, f"malformed annotation ({exc})")
            continue
        image_path = resolve_inside(image_dir, filename or image_id + ".jpg")
        if image_path is None:
            skips.add(xml_path, f"filename {filename!r} points outside the JPEGImages folder")
            continue
        parsed.append((image_id, image_path, size, objects))

    if classes == "voc":
        class_names = list(VOC_CLASSES)
    elif classes == "found":
        class_names = sorted({o[0] for _, _, _, objects in parsed for o in objects})
    elif isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        class_names = list(classes)
    else:
        raise DataError(f"classes={classes!r} for {source} is not accepted; use 'voc', 'found' or a list of "
                        f"class names")
    index = {name: k for k, name in enumerate(class_names)}

    records = []
    for (image_id, image_path, declared, objects), size in zip(parsed, inspect_images(p for _, p, _, _ in parsed)):
        if isinstance(size, str):
            skips.add(image_path, size)
            continue
        if declared is not None and declared != (0, 0) and tuple(size) != declared:
            skips.add(image_path, f"image is {size[0]}x{size[1]} but its XML says {declared[0]}x{declared[1]}")
            continue
        record_objects = []
        for name, xmin, ymin, xmax, ymax, difficult in objects:
            if name not in index:
                raise DataError(f"object class {name!r} in {image_id}.xml of {source} is not in the class "
                                f"list{close_matches(name, class_names)}; pass classes='found' or a list "
                                f"that includes it")
            w, h = xmax - xmin + 1, ymax - ymin + 1
            if w <= 0 or h <= 0:
                skips.add(image_path, f"object {name!r} has an empty box")
                continue
            record_objects.append({"category_id": index[name], "bbox": [xmin - 1, ymin - 1, w, h],
                                   "area": w * h, "iscrowd": difficult, "difficult": bool(difficult)})
        largest = largest_object(record_objects)
        records.append({"image_path": image_path, "image_id": image_id, "width": size[0], "height": size[1],
                        "label": None if largest is None else largest["category_id"],
                        "objects": record_objects})
    return skips.finish(records, class_names)
