"""Judge artifacts by the task metric on validation data, not only by |Δ| on a few check images.

A quantized model never matches Keras to 1e-4; what a user needs to know is whether it still does the task.
Each artifact is run over the validation batches in its runtime, its outputs are put back into the Keras
model's structure, and the task's own evaluation turns them into the headline metric (top-1 accuracy for
classification, accuracy@IoU>=0.5 for localization). The drop against Keras, in points, is compared with the
recipe's threshold for that format.
"""
import numpy as np

from convforge.errors import ExportError
from convforge.export.formats import DEFAULT_MAX_DROP  # noqa: F401  (the formats table's defaults, re-exported)
from convforge.export.verify import compare_quantized, named_outputs



def validation_batches(source, shape, limit=None):
    """Collect [(float32 images, targets)] batches from an iterable of pairs, at most `limit` images."""
    batches, count = [], 0
    for item in source:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ExportError("validation yields something other than (images, targets) pairs; accepted: an "
                              "iterable of (images [N, H, W, C], targets) batches, like a tf.data val split")
        images, targets = item
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
            raise ExportError(f"validation has a batch of shape {tuple(images.shape)}; accepted: float32 "
                              f"batches [N, {', '.join(map(str, shape))}] like the model input")
        if limit is not None and count + len(images) > limit:
            keep = limit - count
            images = images[:keep]
            targets = _take(targets, keep)
        batches.append((images, _as_numpy(targets)))
        count += len(images)
        if limit is not None and count >= limit:
            break
    if not batches:
        raise ExportError("validation holds no images; accepted: a non-empty val split")
    return batches


def _as_numpy(targets):
    """Targets (array, tensor or dict of them) as numpy."""
    if isinstance(targets, dict):
        return {k: np.asarray(v) for k, v in targets.items()}
    return np.asarray(targets)


def _take(targets, n):
    """The first n targets of a batch."""
    if isinstance(targets, dict):
        return {k: v[:n] for k, v in targets.items()}
    return targets[:n]


def restructure(template, names, named):
    """Put {output name: array} back into the Keras output structure `template` (array, list or dict)."""
    if isinstance(template, dict):
        return {key: named[name] for key, name in zip(template, names)}
    if isinstance(template, (list, tuple)):
        return [named[name] for name in names]
    return named[names[0]]


def top1_accuracy(predict, batches):
    """Top-1 accuracy of the first (or only) softmax output against integer or one-hot labels."""
    correct = total = 0
    for images, targets in batches:
        outputs = predict(images)
        probs = outputs if not isinstance(outputs, (dict, list, tuple)) else (
            next(iter(outputs.values())) if isinstance(outputs, dict) else outputs[0])
        labels = targets if not isinstance(targets, dict) else next(iter(targets.values()))
        labels = labels.argmax(-1) if labels.ndim == 2 else labels
        correct += int(np.sum(np.asarray(probs).argmax(-1) == labels))
        total += len(labels)
    return correct / max(total, 1)


def score(run, names, template, batches, metric):
    """Run `run` (images -> {name: array}) over the batches; return (metric value, {name: all outputs})."""
    captured = []

    def predict(images):
        """One batch through the artifact, recorded, in the Keras structure."""
        outputs = run(images)
        captured.append(outputs)
        return restructure(template, names, outputs)

    value = float(metric(predict, batches))
    if not captured:
        raise ExportError("the validation metric never called the model; accepted: a metric(predict, batches) "
                          "that runs predict on the batches")
    return value, {name: np.concatenate([c[name] for c in captured]) for name in names}


def keras_scorer(model, names):
    """run(images) -> {name: float32 array} for a Keras model, for score()."""
    return lambda images: named_outputs(model(images, training=False), names)


def judge(value, outputs, reference_value, reference_outputs, metric_name, max_drop, images, kinds=None,
          higher_is_better=True):
    """The check entry for one artifact's metric: its value, the drop in points (how much worse: a rise for a
    lower-is-better metric such as NME) and whether that is allowed."""
    drop = round((reference_value - value) * (100.0 if higher_is_better else -100.0), 4)
    stats = compare_quantized(reference_outputs, outputs, kinds)
    entry = {"name": metric_name, "value": value, "keras": reference_value, "drop_points": drop,
             "higher_is_better": bool(higher_is_better), "images": images, "top1_agreement": stats["top1_agreement"], "max_abs_diff": stats["max_abs_diff"]}
    if max_drop is not None:
        entry["max_drop_points"] = max_drop
        entry["status"] = "passed" if drop <= max_drop else "failed"
    return entry
