"""COCO detection metrics through pycocotools' COCOeval, the implementation every paper quotes.

Nothing of the metric is re-implemented here: this module only turns convforge's records and detections into
COCO's own JSON (boxes [x, y, w, h] in pixels of the original image, the dataset's own category ids) and reads
COCOeval's summary back under the names users know (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ...).
`evaluate_detections` is the detection task's evaluation: a detector over the val batches, scored, and its
results written as COCO's own files (`convforge evaluate --out DIR`).
"""
import contextlib
import io
import os

import numpy as np

from convforge.data.instances import encode_rle
from convforge.errors import DataError

# COCOeval.stats, in its order (maxDets 100 unless named).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# COCOeval.stats of keypoints (OKS instead of IoU; maxDets 20, no small objects).
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


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
                                "area": float(o.get("area") or w * h), "iscrowd": int(bool(o.get("iscrowd"))),
                                **({"segmentation": o["segmentation"]} if o.get("segmentation") else {}),
                                **({"keypoints": [float(v) for v in o["keypoints"]],
                                    "num_keypoints": sum(1 for v in o["keypoints"][2::3] if v > 0)}
                                   if o.get("keypoints") else {})})
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


def coco_metrics(gt, detections, iou_type="bbox", sigmas=None):
    """COCOeval's summary for ground truth `gt` (a COCO dict or the path of its JSON) and a list of COCO result
    dicts, as {"AP": ..., "AP50": ..., ...}; -1 where COCO has nothing to average (no small objects). iou_type:
    "bbox" (results with boxes), "segm" (results with RLE masks) or "keypoints" (results with keypoints, scored
    by OKS with the per-keypoint `sigmas`, COCO's 17 by default)."""
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
        names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES
        if not detections:
            # loadRes refuses an empty list; no detection scores 0 wherever there is something to find.
            return {name: 0.0 for name in names}
        # loadRes writes area, id and more into each result dict it is given: it gets copies.
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(names, evaluator.stats)}


def keypoints_to_coco(image_id, category_id, crops, points, scores, box_scores):
    """COCO keypoint results of people: their crops (P, 4 yxyx in pixels of the image), keypoints (P, K, 2)
    normalized to each crop and scores (P, K); a person's score is its box score times its mean keypoint score."""
    from convforge.data.instances import from_crops

    results = []
    for xy, s, box_score in zip(from_crops(crops, points), np.asarray(scores, np.float64), np.asarray(box_scores)):
        flat = np.concatenate([xy, np.ones((len(xy), 1))], 1).reshape(-1)
        results.append({"image_id": image_id, "category_id": int(category_id),
                        "keypoints": [round(float(v), 2) for v in flat],
                        "score": round(float(box_score) * float(np.mean(s)), 5)})
    return results


def oks_ap(records, results, sigmas, boxes, out_dir=None, file_name="keypoint_results.json"):
    """COCO keypoint AP (OKS) of keypoint results over the Records' images, as {"oks_ap", "oks_ap50", "oks_ap75",
    "oks_ar", "oks_boxes"} (boxes: where the people were cut from, "ground_truth" or "detector"); the results are
    written to out_dir/file_name when given."""
    metrics = coco_metrics(ground_truth(records), results, "keypoints", sigmas)
    if out_dir is not None:
        from convforge.atomic import write_json

        write_json(os.path.join(out_dir, file_name), results, indent=None)
    return {"oks_ap": metrics["AP"], "oks_ap50": metrics["AP50"], "oks_ap75": metrics["AP75"], "oks_ar": metrics["AR"],
            "oks_boxes": boxes}


def evaluate_detections(model, batches, class_names=(), source=None, out_dir=None, masks=False, mask_threshold=0.5):
    """COCO metrics of a detector (outputs boxes, scores, classes, num_detections) over (images, padded
    targets) batches, with "count" (images), "detections" and, where there is one, "annotations": the COCO
    ground-truth file they were scored against.

    source: the Records the batches were made from, in order; each detection is then reported with the record's
    image id, the dataset's category id (`Records.category_ids`) and a box in pixels of the original image, and
    scored against the source's own COCO file (`Records.annotations_file`), else the ground truth of the records.
    Without Records (training's evaluation, TFRecord examples, export judging) the padded targets are the
    ground truth, in pixels of the model input, with images numbered by position. out_dir: given Records,
    detections.json (COCO results) is written there, and annotations.json when the ground truth had no file;
    without them there are no original ids and sizes to write results in, so nothing is written.
    masks: the model also outputs `masks` (B, N, M, M) in its boxes' frames (Mask R-CNN): they are pasted into
    each image, scored as COCO `segm` (AP, AP50, ...; box AP as box_AP, ...) and written as segmentations.json.
    """
    from convforge.atomic import write_json
    from convforge.data.records import Records

    records = source if isinstance(source, Records) else None
    category_ids = records.category_ids if records is not None else None
    results, segments, padded, index, width, height = [], [], [], 0, 0, 0
    for images, targets in batches:
        height, width = (int(v) for v in images.shape[1:3])
        out = {k: np.asarray(v) for k, v in model(images, training=False).items()}
        t = {k: np.asarray(v) for k, v in targets.items()}
        for b in range(len(out["scores"])):
            index += 1
            if records is None:
                image_id, size = index, (width, height)
                padded.append((image_id, {k: v[b] for k, v in t.items()}))
            elif index <= len(records):
                r = records[index - 1]
                # The model saw the image stretched to its input size (preprocessing.resize does not letterbox),
                # so a normalized box is the same fraction of the original image.
                image_id, size = image_id_of(r, index - 1), (int(r["width"]), int(r["height"]))
            else:
                continue  # more images than records: refused below
            found = detections_to_coco(image_id, *size, out["boxes"][b], out["scores"][b], out["classes"][b],
                                       category_ids, out["num_detections"][b])
            results += found
            if masks:
                segments += masks_to_coco(found, out["masks"][b], out["boxes"][b], size, mask_threshold)
    if records is not None and index != len(records):
        raise DataError(f"{records.source or 'the val source'} has {len(records)} images but its pipeline gave "
                        f"{index}, so detections cannot be matched to their images; expected every image to "
                        f"decode")
    annotations = records.annotations_file if records is not None else None
    if records is None:
        gt = padded_ground_truth(padded, width, height, class_names)
    else:
        gt = annotations or ground_truth(records)
    metrics = coco_metrics(gt, results)
    if masks:
        # Masks are what an instance segmenter is judged by: segm AP under COCO's names, box AP beside it.
        metrics = {**coco_metrics(gt, segments, "segm"), **{f"box_{k}": v for k, v in metrics.items()}}
    if out_dir is not None and records is not None:
        if annotations is None:
            annotations = os.path.join(os.fspath(out_dir), "annotations.json")
            write_json(annotations, gt, indent=None)
        write_json(os.path.join(os.fspath(out_dir), "detections.json"), results, indent=None)
        if masks:
            write_json(os.path.join(os.fspath(out_dir), "segmentations.json"), segments, indent=None)
    return {**metrics, "count": index, "detections": len(results),
            **({"annotations": os.path.abspath(annotations)} if annotations else {})}


def masks_to_coco(found, masks, boxes, size, threshold=0.5):
    """COCO segm results for one image's box results `found` (detections_to_coco, in order) from their masks
    (N, M, M) in the boxes' frames, pasted into the width x height image and run-length encoded."""
    from convforge.data.instances import paste_masks

    n = len(found)
    pasted = paste_masks(np.asarray(masks)[:n], np.asarray(boxes)[:n], size[1], size[0], threshold)
    segments = []
    for result, mask in zip(found, pasted):
        segments.append({"image_id": result["image_id"], "category_id": result["category_id"],
                         "segmentation": encode_rle(mask), "score": result["score"]})
    return segments


def padded_ground_truth(padded, width, height, class_names=()):
    """The COCO ground-truth dict of padded targets [(image_id, {"boxes", "classes", "is_crowd", "valid"} and
    optionally "masks" (M, H, W))] of width x height model inputs, categories numbered from 0 (named by
    class_names where given)."""
    images, annotations = [], []
    for image_id, t in padded:
        images.append({"id": image_id, "width": width, "height": height})
        valid = t["valid"]
        masks = t["masks"][valid] if "masks" in t else [None] * int(valid.sum())
        for box, cls, crowd, mask in zip(t["boxes"][valid], t["classes"][valid], t["is_crowd"][valid], masks):
            x, y, w, h = coco_bbox(box, width, height)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(crowd),
                                **({} if mask is None else {"segmentation": encode_rle(mask)})})
    names = list(class_names) or [str(k) for k in range(1 + max([a["category_id"] for a in annotations] or [0]))]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": k, "name": str(n)} for k, n in enumerate(names)]}
