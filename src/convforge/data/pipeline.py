"""build_dataset: any source -> tf.data batches of (float32 images, task targets), ready for model.fit.

Order of work, each step there for a reason:

    shuffle file list (whole, cheap)  when training: every epoch without cache (nothing decoded is buffered),
                                      once before a cache (so a class-sorted list does not stay sorted)
    read + decode + channels + resize + task target   in parallel (AUTOTUNE)
    ignore_errors                     a last guard: sources already checked every file up-front
    cache                             decoded, resized uint8 images: 4x smaller than float32
    shuffle (shuffle_buffer)          when training on cached or TFRecord data
    batch
    augment (training only) + normalize   on whole batches: Keras layers vectorize over the batch
    prefetch(AUTOTUNE)

Targets come from the task's parser (`Task.parser`, see convforge.tasks): which records qualify and what
each example trains on; a task with soft labels (label smoothing, mixup / cutmix) gets them one-hot, in
training and evaluation alike, so one loss serves both.
"""
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from convforge.data.augment import build_augmenter, check_augment, mixes_labels
from convforge.data.instances import (DEFAULT_MAX_INSTANCES, ParseContext, keypoints_array, rasterize_all,
                                      segmentation_text)
from convforge.data.records import Examples, ImageArrays, Records
from convforge.errors import DataError, close_matches
from convforge import preprocessing as pixels

# The contract's names, kept here for callers of convforge.data.
preprocessing, normalization, NORMALIZATIONS = pixels.contract, pixels.normalization, pixels.NORMALIZATIONS


def _record_slices(records, parser, num_keypoints, aspect):
    """The per-example tensors of usable Records (or of their views, where the parser cuts a record into several,
    with each view's crop box): paths, labels and ragged per-object annotations (boxes, classes, crowd flags,
    segmentation JSON, normalized keypoints)."""
    kept = parser.examples_of(records, aspect)
    lengths, boxes, classes, crowd, segmentations, keypoints = [], [], [], [], [], []
    for r in kept:
        objects = r.get("objects", ())
        lengths.append(len(objects))
        for o in objects:
            x, y, w, h = o["bbox"]
            boxes.append([y / r["height"], x / r["width"], (y + h) / r["height"], (x + w) / r["width"]])
            classes.append(o["category_id"])
            crowd.append(bool(o.get("iscrowd")))
            segmentations.append(segmentation_text(o))
            keypoints.append(keypoints_array(o, r["width"], r["height"], num_keypoints))

    def ragged(values, dtype, shape):
        # The object count leads explicitly: with K = 0 keypoints, -1 could not be inferred from zero values.
        array = np.asarray(values, dtype).reshape((len(values), *shape[1:]))
        return tf.RaggedTensor.from_row_lengths(array, lengths)

    crops = {"crop": np.array([r["crop"] for r in kept], np.float32).reshape(-1, 4)} if parser.views else {}
    return kept, {
        **crops,
        "path": [r["image_path"] for r in kept],
        "label": np.array([-1 if r.get("label") is None else r["label"] for r in kept], np.int32),
        "boxes": ragged(boxes, np.float32, (-1, 4)),
        "classes": ragged(classes, np.int32, (-1,)),
        "is_crowd": ragged(crowd, bool, (-1,)),
        "segmentation": ragged(segmentations, object, (-1,)),
        "keypoints": ragged(keypoints, np.float32, (-1, num_keypoints, 3)),
        "source_id": [str(r.get("image_id", r["image_path"])) for r in kept],
        "voxels": [r.get("voxels") or "" for r in kept],  # the .binvox grid beside the image, if any
    }


def _source_name(source):
    """How messages name a source: its own description, else its type."""
    return getattr(source, "source", "") or type(source).__name__


def build_dataset(records_or_source, task, input_shape, batch_size, training, *, cache=False,
                  shuffle_buffer=1000, augment=(), normalize="imagenet", seed=None, deterministic=None,
                  drop_remainder=False, one_hot=None, num_classes=None, max_instances=DEFAULT_MAX_INSTANCES):
    """Return a tf.data.Dataset of (images float32 (B, H, W, C), targets) for a task.

    Args:
        records_or_source: Records, ImageArrays or Examples from a source, or a source spec such as
            {"source": "coco", "annotations": ..., "images_root": ...} (see sources.load_source).
        task: a registered task name or a Task (convforge.tasks); its parser makes the targets.
        input_shape: (H, W, C); images are resized to H x W and converted to C = 1 or 3 channels.
        training: shuffle and augment when True; evaluation data is neither.
        cache: False, True (memory) or a file path; caches decoded, resized images before augmentation.
        shuffle_buffer: elements buffered when shuffling decoded data (file lists are shuffled whole).
        augment: names or {name: args} from augment.AUGMENTATIONS; validated even when not training.
        normalize: "imagenet", "unit" (x / 255) or (mean, std) lists on the 0..1 scale.
        seed: seeds the shuffle and every augmentation layer.
        deterministic: fixes element order (and runs augmentation in order), so a seed repeats a run.
            None means False for training (parallel work may finish out of order, which is faster) and
            True for evaluation, whose batches must line up with the records they came from.
        one_hot: one-hot classification labels; None means "when augment mixes labels".
        num_classes: for one_hot when the source has no class names.
        max_instances: multi-instance targets are padded (or cut) to this many objects per image.

    Examples:
        >>> ds = build_dataset(digits("train"), "classification", (32, 32, 1), 64, True,
        ...                    augment=["translate"], normalize="unit", seed=0)  # doctest: +SKIP
        >>> images, labels = next(iter(ds))                                     # doctest: +SKIP
    """
    if deterministic is None:
        deterministic = not training
    if isinstance(records_or_source, (Mapping, str)):
        from convforge.data.sources import load_source

        records_or_source = load_source(records_or_source)
    source = records_or_source
    if not isinstance(source, (Records, ImageArrays, Examples)):
        raise DataError(f"build_dataset takes Records, ImageArrays or Examples from a source, or a source "
                        f"spec; got {type(source).__name__}")
    from convforge.tasks import get_task, task_names

    if isinstance(task, str):
        if task not in task_names():
            raise DataError(f"task {task!r} has no data parser{close_matches(task, task_names())}; accepted: "
                            f"{', '.join(task_names())}")
        task = get_task(task)
    parser = task.parser
    spec = pixels.contract(input_shape, normalize)
    (height, width), channels = spec["resize"], spec["channels"]
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise DataError(f"batch_size={batch_size!r} must be a positive integer")
    check_augment(augment, task)
    augmenter = (build_augmenter(augment, task, (height, width, channels), seed,
                                 getattr(source, "keypoint_names", None)) if training else None)
    one_hot = mixes_labels(augment) if one_hot is None else one_hot
    if one_hot and parser.one_hot is None:
        raise DataError(f"one_hot (soft labels) does not apply to {task.name} targets; accepted: one_hot=False "
                        f"and no label-mixing augmentation")
    class_names = getattr(source, "class_names", None)
    num_classes = num_classes or (len(class_names) if class_names else None)
    if one_hot and not num_classes:
        raise DataError(f"{_source_name(source)} has no class names, so one-hot labels need num_classes")
    missing = task.annotations - {"label", "picture"}  # image arrays hold pictures and labels only
    if missing and isinstance(source, ImageArrays):
        raise DataError(f"{_source_name(source)} has no {', '.join(sorted(missing))} (image "
                        f"labels only), so it cannot serve {task.name}; accepted: a source with annotations "
                        f"(coco, voc, shapes, tfrecord)")

    keypoint_names = getattr(source, "keypoint_names", None) or []
    context = ParseContext(height, width, max_instances, len(keypoint_names))
    wants_masks = "masks" in task.annotations

    make_target = parser.target if training or parser.eval_target is None else parser.eval_target

    def prepare(example):
        """Example dict -> (uint8 image at input size, target)."""
        if wants_masks:
            size = tf.shape(example["image"])
            masks = tf.numpy_function(rasterize_all, [example["segmentation"], size[0], size[1], height, width],
                                      tf.uint8, stateful=False)
            example = {**example, "masks": tf.ensure_shape(masks, [None, height, width])}
        image = pixels.to_channels(example["image"], channels)
        if "crop" in example:  # a view of the image (one person of several): cut out, then sized like any image
            image = pixels.crop(image[None], example["crop"][None], spec)[0]
        else:
            image = pixels.resize(image, spec)
        image = tf.saturate_cast(image, tf.uint8)
        target = make_target(example, context)
        if one_hot:
            target = parser.one_hot(target, num_classes)
        return image, target

    autotune = tf.data.AUTOTUNE
    shuffled_early = False
    if isinstance(source, Records):
        kept, slices = _record_slices(source, parser, len(keypoint_names), width / height)
        if not kept:
            raise DataError(f"{_source_name(source)} has no images with a {task.name} target (its annotations "
                            f"need {', '.join(sorted(task.annotations))}); check its annotations")
        dataset = tf.data.Dataset.from_tensor_slices(slices)
        if training and not cache:
            dataset = dataset.shuffle(len(kept), seed=seed, reshuffle_each_iteration=True)
            shuffled_early = True
        elif training:
            # A cache keeps its first order, later mixed only within shuffle_buffer: a source listed class by class
            # (image folders, .binvox folders) would give batches of one or two classes. One shuffle of the whole
            # list, fixed by the seed, before caching makes that first order a random one.
            dataset = dataset.shuffle(len(kept), seed=seed, reshuffle_each_iteration=False)

        def decode(example):
            """Read and decode the file an example points at."""
            data = tf.io.read_file(example["path"])
            return {**example, "image": tf.io.decode_image(data, channels=0, expand_animations=False)}

        dataset = dataset.map(lambda e: prepare(decode(e)), num_parallel_calls=autotune)
    elif isinstance(source, ImageArrays):
        if len(source.labels) == 0:
            raise DataError(f"{_source_name(source)} holds no images")
        dataset = tf.data.Dataset.from_tensor_slices({"image": source.images, "label": source.labels})
        if training:  # as above: reshuffled each epoch, or once before a cache
            dataset = dataset.shuffle(len(source.labels), seed=seed, reshuffle_each_iteration=not cache)
            shuffled_early = not cache
        dataset = dataset.map(lambda e: prepare({**e, "label": tf.cast(e["label"], tf.int32)}),
                              num_parallel_calls=autotune)
    else:
        if parser.views:
            raise DataError(f"{_source_name(source)} streams whole images, but this {task.name} head trains on crops "
                            f"of each object (top_down); accepted: a source of records (coco, figures, voc)")
        dataset = source.dataset.filter(parser.keeps_example).map(prepare, num_parallel_calls=autotune)

    dataset = dataset.ignore_errors(log_warning=True)
    if cache:
        dataset = dataset.cache(cache if isinstance(cache, str) else "")
    if training and not shuffled_early:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def finish(images, targets):
        """Augment (training) and normalize one batch."""
        images = tf.cast(images, tf.float32)
        if augmenter is not None:
            images, targets = augmenter(images, targets)
        return pixels.normalize(images, spec), targets

    # Keras layers draw from a stateful seed generator; only an in-order map makes those draws repeatable.
    in_order = deterministic and augmenter is not None
    dataset = dataset.map(finish, num_parallel_calls=None if in_order else autotune)
    dataset = dataset.prefetch(autotune)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return dataset.with_options(options)
