"""voc: the Pascal VOC layout (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt)."""
import os
import xml.etree.ElementTree as ElementTree

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


def voc(root, split="train", classes="voc", strict=False):
    """Load a Pascal VOC split; `difficult` objects get iscrowd=1, which evaluation ignores as VOC does.

    classes: "voc" (default) uses the standard 20 VOC classes in the devkit order, so ids match every VOC
    model; "found" uses the sorted names that occur in this split's annotations (for VOC-layout datasets
    with other classes); or an explicit list of names. An object whose name is not in the class list raises
    DataError. Boxes become COCO [x, y, w, h] with VOC's 1-based corners shifted to 0-based (x = xmin - 1,
    w = xmax - xmin + 1). Each image's `label` is the class of its largest non-difficult object.

    Examples:
        >>> records = voc("VOCdevkit/VOC2012", "val")  # doctest: +SKIP
        >>> records.class_names[14]                    # doctest: +SKIP
        'person'
    """
    source = f"voc({root}, {split!r})"
    root = require_path(root, "VOC folder", source)
    list_file = require_path(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "split list", source)
    ann_dir = require_path(os.path.join(root, "Annotations"), "annotations folder", source)
    image_dir = require_path(os.path.join(root, "JPEGImages"), "images folder", source)
    with open(list_file, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]

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
