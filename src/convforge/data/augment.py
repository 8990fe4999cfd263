"""Augmentations by name, built from Keras preprocessing layers and applied to whole batches inside tf.data.

Each entry of AUGMENTATIONS is data: the Keras layer it builds, the annotation kinds it carries (an image
label survives any of them; boxes only the geometric ones that move them, or the photometric ones that leave
them where they are), whether it moves boxes and whether it mixes labels. A task's annotations
(`Task.annotations`) must all be carried by every augmentation of its recipe. A recipe lists them by name,
with optional arguments::

    augment: [flip, {name: crop, zoom: 0.2}, {color_jitter: {hue: 0.0}}, mixup]

Images arrive in 0..255 (before normalization). For localization, the geometric layers (flip, crop,
translate, rotate) move the box through Keras' own bounding-box path (`bounding_box_format` and a
{"images", "bounding_boxes"} input); tests check each against the pixels it moves. Boxes travel in absolute
"xyxy" pixels because RandomRotation (Keras 3.15) treats its input as "xyxy" whatever format it is told
(with "rel_yxyx" its boxes collapse), and RandomCrop misplaces boxes (its crop offsets land on the wrong
coordinates), so `crop` is RandomZoom zooming in. A rotated box is the box around the rotated corners,
so it is looser than the object. The one-object target keeps its class even when a transform pushes the
box partly out of the image (the box is clipped to it); borders are filled with black rather than
reflected for localization, since a mirrored copy of the object would contradict its single box. mixup
and cutmix blend pairs of images and so need soft labels: the pipeline one-hot encodes classification
labels whenever either is listed.
"""
import dataclasses
import inspect
from typing import Callable

from convforge.errors import DataError, close_matches

BOX_FORMAT = "xyxy"


# Every annotation kind a record can carry (see data.records); photometric augmentations carry all of them.
ANNOTATION_KINDS = frozenset({"label", "boxes", "masks", "keypoints"})
# What the geometric ones carry today: their boxes move with the pixels; masks and keypoints do not move yet,
# so a task that needs them is refused these augmentations rather than trained on misaligned targets.
GEOMETRIC = frozenset({"label", "boxes"})


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A named augmentation: how to build its layer and which annotation kinds survive it."""

    build: Callable  # build(context, **kwargs) -> keras layer; context has seed, channels, annotations
    carries: frozenset = ANNOTATION_KINDS
    moves_boxes: bool = False
    mixes_labels: bool = False


@dataclasses.dataclass(frozen=True)
class Context:
    """What a builder may need to know about the pipeline it joins."""

    seed: int | None
    channels: int
    annotations: frozenset = frozenset({"label"})

    @property
    def fill_mode(self):
        """Reflection duplicates objects at the border, which the boxes would not account for."""
        return "constant" if "boxes" in self.annotations else "reflect"


def _flip(ctx, mode="horizontal"):
    import keras

    return keras.layers.RandomFlip(mode, seed=ctx.seed, bounding_box_format=BOX_FORMAT)


def _crop(ctx, zoom=0.3):
    import keras

    # A random crop of (1 - zoom)..1 of each side, resized back: RandomZoom's negative factors zoom in.
    return keras.layers.RandomZoom((-zoom, 0.0), (-zoom, 0.0), fill_mode=ctx.fill_mode, seed=ctx.seed,
                                   bounding_box_format=BOX_FORMAT)


def _translate(ctx, factor=0.1):
    import keras

    return keras.layers.RandomTranslation(factor, factor, fill_mode=ctx.fill_mode, seed=ctx.seed,
                                          bounding_box_format=BOX_FORMAT)


def _rotate(ctx, degrees=15.0):
    import keras

    return keras.layers.RandomRotation(degrees / 360.0, fill_mode=ctx.fill_mode, seed=ctx.seed,
                                       bounding_box_format=BOX_FORMAT)


def _color_jitter(ctx, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05):
    import keras

    colour = ctx.channels == 3
    # Keras' saturation factor is a no-op at 0.5, so a symmetric strength s becomes the range 0.5 +- s.
    return keras.layers.RandomColorJitter(
        value_range=(0, 255), brightness_factor=brightness or None, contrast_factor=contrast or None,
        saturation_factor=(0.5 - saturation, 0.5 + saturation) if colour and saturation else None,
        hue_factor=hue if colour and hue else None, seed=ctx.seed, bounding_box_format=BOX_FORMAT)


def _rand_augment(ctx, num_ops=2, magnitude=0.5):
    import keras

    return keras.layers.RandAugment(value_range=(0, 255), num_ops=num_ops, factor=magnitude, seed=ctx.seed)


def _mixup(ctx, alpha=0.2):
    import keras

    return keras.layers.MixUp(alpha=alpha, seed=ctx.seed)


def _cutmix(ctx, alpha=1.0):
    import keras

    return keras.layers.CutMix(factor=alpha, seed=ctx.seed)


LABEL_ONLY = frozenset({"label"})
AUGMENTATIONS = {
    "flip": Augmentation(_flip, GEOMETRIC, moves_boxes=True),
    "crop": Augmentation(_crop, GEOMETRIC, moves_boxes=True),
    "translate": Augmentation(_translate, GEOMETRIC, moves_boxes=True),
    "rotate": Augmentation(_rotate, GEOMETRIC, moves_boxes=True),
    "color_jitter": Augmentation(_color_jitter),
    # RandAugment's shears and translations have no verified box path yet, so it carries image labels only.
    "rand_augment": Augmentation(_rand_augment, LABEL_ONLY),
    # Blended images have blended labels; a box target cannot be blended.
    "mixup": Augmentation(_mixup, LABEL_ONLY, mixes_labels=True),
    "cutmix": Augmentation(_cutmix, LABEL_ONLY, mixes_labels=True),
}


def usable_for(annotations):
    """The augmentation names that carry every kind in `annotations`."""
    return [name for name, spec in AUGMENTATIONS.items() if set(annotations) <= spec.carries]


def parse_augment(augment):
    """Normalize a recipe's augment list to [(name, kwargs)]: names, (name, kwargs) pairs or mappings."""
    if isinstance(augment, (str, dict)):
        augment = [augment]
    parsed = []
    for item in augment or ():
        if isinstance(item, str):
            parsed.append((item, {}))
        elif isinstance(item, dict) and "name" in item:
            parsed.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
        elif isinstance(item, dict) and len(item) == 1:
            name, kwargs = next(iter(item.items()))
            parsed.append((name, dict(kwargs or {})))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict):
            parsed.append((item[0], dict(item[1])))
        else:
            raise DataError(f"augment entry {item!r} is not accepted; use a name such as 'flip', "
                            f"{{'name': 'crop', 'zoom': 0.2}} or {{'crop': {{'zoom': 0.2}}}}")
    return parsed


def _task(task):
    """A Task from a Task or a registered task name."""
    if isinstance(task, str):
        from convforge.tasks import get_task

        return get_task(task)
    return task


def check_augment(augment, task):
    """Validate names, arguments and annotation fit (for a Task or task name) of an augment list; return
    [(name, kwargs)]."""
    task = _task(task)
    parsed = parse_augment(augment)
    for name, kwargs in parsed:
        if name not in AUGMENTATIONS:
            raise DataError(f"unknown augmentation {name!r}{close_matches(name, AUGMENTATIONS)}; "
                            f"accepted: {', '.join(AUGMENTATIONS)}")
        spec = AUGMENTATIONS[name]
        lost = sorted(task.annotations - spec.carries)
        if lost:
            raise DataError(f"augmentation {name!r} cannot be used for {task.name}: it cannot carry the "
                            f"{', '.join(lost)} that {task.name} needs; accepted for {task.name}: "
                            f"{', '.join(usable_for(task.annotations))}")
        accepted = list(inspect.signature(spec.build).parameters)[1:]
        for key in kwargs:
            if key not in accepted:
                raise DataError(f"augmentation {name!r} has no argument {key!r}{close_matches(key, accepted)}; "
                                f"accepted: {', '.join(accepted) or 'none'}")
    return parsed


def mixes_labels(augment):
    """Whether an augment list blends labels (mixup, cutmix), which needs one-hot targets."""
    return any(AUGMENTATIONS[name].mixes_labels for name, _ in parse_augment(augment) if name in AUGMENTATIONS)


def build_augmenter(augment, task, input_shape, seed=None):
    """Return fn(images, targets) -> (images, targets) applying the list to a batch, or None when empty.

    images: float32 (B, H, W, C) in 0..255. targets: the task's (a Task); where it has boxes, the geometric
    steps move them through `task.boxes_of` / `task.with_boxes` (normalized [ymin, xmin, ymax, xmax]).
    """
    import tensorflow as tf

    task = _task(task)
    parsed = check_augment(augment, task)
    if not parsed:
        return None
    height, width, channels = input_shape
    steps = []
    for i, (name, kwargs) in enumerate(parsed):
        spec = AUGMENTATIONS[name]
        ctx = Context(None if seed is None else seed + 1 + i, channels, task.annotations)
        try:
            layer = spec.build(ctx, **kwargs)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise DataError(f"augmentation {name!r} rejected its arguments {kwargs}: {exc}") from None
        steps.append((spec, layer))
    scale = tf.constant([width, height, width, height], tf.float32)

    def apply(images, targets):
        """Run every step on one batch."""
        for spec, layer in steps:
            if spec.mixes_labels:
                out = layer({"images": images, "labels": targets}, training=True)
                images, targets = out["images"], tf.cast(out["labels"], tf.float32)
            elif "boxes" in task.annotations and spec.moves_boxes:
                y0, x0, y1, x1 = tf.unstack(task.boxes_of(targets), axis=-1)
                boxes = tf.stack([x0, y0, x1, y1], -1) * scale
                out = layer({"images": images, "bounding_boxes": {
                    "boxes": boxes, "labels": tf.zeros(tf.shape(boxes)[:2], tf.int32)}}, training=True)
                x0, y0, x1, y1 = tf.unstack(tf.cast(out["bounding_boxes"]["boxes"], tf.float32) / scale, axis=-1)
                moved = tf.clip_by_value(tf.stack([y0, x0, y1, x1], -1), 0.0, 1.0)
                images, targets = out["images"], task.with_boxes(targets, moved)
            else:
                images = layer(images, training=True)
        return tf.cast(images, tf.float32), targets

    return apply
