"""COCO detection metrics through pycocotools' COCOeval, the implementation every paper quotes.

Nothing of the metric is re-implemented here: this module only turns convforge's records and detections into
COCO's own JSON (boxes [x, y, w, h] in pixels of the original image, the dataset's own category ids) and reads
COCOeval's summary back under the names users know (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ...).
"""
import contextlib
import io

import numpy as np

from convforge.errors import DataError

# COCOeval.stats, in its order (maxDets 100 unless named).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def ground_truth(records):
    """The COCO ground-truth dict of Records (images, annotations with crowd flags, categories)."""
    category_ids = records.category_ids or list(range(len(records.class_names)))
    images, annotations = [], []
    for index, r in enumerate(records):
        image_id = image_id_of(r, index)
        images.append({"id": image_id, "width": int(r["width"]), "height": int(r["height"]),
                       "file_name": str(r["image_path"])})
        for o in r.get("objects", ()):
            x, y, w, h = (float(v) for v in o["bbox"])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(category_ids[o["category_id"]]), "bbox": [x, y, w, h],
                                "area": float(o.get("area") or w * h), "iscrowd": int(bool(o.get("iscrowd")))})
    categories = [{"id": int(c), "name": str(n)} for c, n in zip(category_ids, records.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def image_id_of(record, index):
    """A record's COCO image id: its own integer id, else its position."""
    image_id = record.get("image_id")
    return int(image_id) if isinstance(image_id, (int, np.integer)) else index


def coco_bbox(box, width, height):
    """A normalized [ymin, xmin, ymax, xmax] box as COCO's [x, y, w, h] in pixels of a width x height image."""
    y0, x0, y1, x1 = (float(v) for v in box)
    return [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]


def detections_to_coco(image_id, width, height, boxes, scores, classes, category_ids, count=None):
    """One image's detections as COCO results: normalized [ymin, xmin, ymax, xmax] boxes become pixel
    [x, y, w, h] of the original width x height, class k becomes the dataset's category_ids[k] (k itself when
    category_ids is None)."""
    n = len(scores) if count is None else int(count)
    results = []
    for box, score, cls in zip(np.asarray(boxes)[:n], np.asarray(scores)[:n], np.asarray(classes)[:n]):
        category = int(cls) if category_ids is None else int(category_ids[int(cls)])
        results.append({"image_id": image_id, "category_id": category,
                        "bbox": [round(v, 2) for v in coco_bbox(box, width, height)],
                        "score": round(float(score), 5)})
    return results


def coco_metrics(gt, detections):
    """COCOeval's bbox summary for ground truth `gt` (a COCO dict or the path of its JSON) and a list of COCO
    result dicts, as {"AP": ..., "AP50": ..., ...}; -1 where COCO has nothing to average (no small objects)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        if isinstance(gt, dict):
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
        else:
            try:
                coco_gt = COCO(str(gt))
            except (OSError, ValueError) as err:
                raise DataError(f"COCO ground truth {gt} cannot be read ({err}); accepted: a COCO instances "
                                f"JSON file") from None
        if not detections:
            # loadRes refuses an empty list; no detection scores 0 wherever there is something to find.
            return {name: 0.0 for name in STAT_NAMES}
        coco_dt = coco_gt.loadRes(list(detections))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}
