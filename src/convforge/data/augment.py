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

from convforge.data.instances import flip_pairs
from convforge.errors import DataError, close_matches

BOX_FORMAT = "xyxy"


# Every annotation kind a record can carry (see data.records); photometric augmentations carry all of them.
# "picture" is the image itself as the target (style): any augmentation that keeps one picture per example carries
# it; the label mixers, which blend two, do not.
ANNOTATION_KINDS = frozenset({"label", "boxes", "masks", "keypoints", "voxels", "picture"})
# The geometric ones move boxes, masks and keypoints with the pixels (move_spatial); none moves a voxel grid.
GEOMETRIC = ANNOTATION_KINDS - {"voxels"}


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


def build_augmenter(augment, task, input_shape, seed=None, keypoint_names=None):
    """Return fn(images, targets) -> (images, targets) applying the list to a batch, or None when empty.

    images: float32 (B, H, W, C) in 0..255. targets: the task's (a Task). A geometric step draws one random
    transformation per image and applies it to the image and to every spatial kind of the targets
    (`task.spatial_of` / `task.with_spatial`): boxes, instance masks (nearest neighbour) and keypoints, whose
    left/right names (`keypoint_names`) swap on a horizontal flip.
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
    pairs = flip_pairs(keypoint_names)
    spatial = task.annotations & SPATIAL_KINDS

    def apply(images, targets):
        """Run every step on one batch."""
        for spec, layer in steps:
            if spec.mixes_labels:
                out = layer({"images": images, "labels": targets}, training=True)
                images, targets = out["images"], tf.cast(out["labels"], tf.float32)
            elif spatial and spec.moves_boxes:
                transformation = layer.get_random_transformation(images, training=True)
                moved = move_spatial(layer, transformation, task.spatial_of(targets), (height, width), pairs)
                images = layer.transform_images(images, transformation, training=True)
                targets = task.with_spatial(targets, moved)
            else:
                images = layer(images, training=True)
        return tf.cast(images, tf.float32), targets

    return apply


SPATIAL_KINDS = frozenset({"boxes", "masks", "keypoints"})
# Keypoints travel as boxes this many pixels wide around them: Keras moves boxes, not points, and a box
# symmetric about its point keeps the point at its centre under flips, shifts, zooms and rotations.
_POINT_HALF_WIDTH = 0.5


def move_spatial(layer, transformation, kinds, size, pairs=()):
    """Apply one drawn transformation of a Keras geometric layer to boxes, masks and keypoints alike.

    kinds: {"boxes": (B, N, 4) normalized [ymin, xmin, ymax, xmax], "masks": (B, N, H, W) uint8,
    "keypoints": (B, N, K, 3) normalized x, y and visibility}, any subset. Boxes are clipped to the image; a
    keypoint that leaves the image becomes invisible (v = 0, at 0, 0); on images the layer flipped
    horizontally, left and right keypoints (`pairs`) trade places.
    """
    import tensorflow as tf

    height, width = size
    scale = tf.constant([width, height, width, height], tf.float32)

    def move_boxes(yxyx):
        """Normalized yxyx boxes (B, N, 4) through the layer's box path (absolute xyxy, as BOX_FORMAT says)."""
        y0, x0, y1, x1 = tf.unstack(tf.cast(yxyx, tf.float32), axis=-1)
        boxes = tf.stack([x0, y0, x1, y1], -1) * scale
        out = layer.transform_bounding_boxes({"boxes": boxes, "labels": tf.zeros(tf.shape(boxes)[:2], tf.int32)},
                                             transformation, training=True)
        x0, y0, x1, y1 = tf.unstack(tf.cast(out["boxes"], tf.float32) / scale, axis=-1)
        return tf.clip_by_value(tf.stack([y0, x0, y1, x1], -1), 0.0, 1.0)

    moved = {}
    if "boxes" in kinds:
        moved["boxes"] = move_boxes(kinds["boxes"])
    if "masks" in kinds:
        masks = tf.transpose(kinds["masks"], [0, 2, 3, 1])  # the instances become channels of one image
        masks = layer.transform_segmentation_masks(tf.cast(masks, tf.float32), transformation, training=True)
        moved["masks"] = tf.cast(tf.round(tf.transpose(masks, [0, 3, 1, 2])), kinds["masks"].dtype)
    if "keypoints" in kinds:
        points = tf.cast(kinds["keypoints"], tf.float32)
        shape = tf.shape(points)
        x, y, v = points[..., 0], points[..., 1], points[..., 2]
        dx, dy = _POINT_HALF_WIDTH / width, _POINT_HALF_WIDTH / height
        boxes = tf.reshape(tf.stack([y - dy, x - dx, y + dy, x + dx], -1), [shape[0], -1, 4])
        boxes = tf.reshape(move_boxes(boxes), tf.concat([shape[:3], [4]], 0))
        inside = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1]) & (v > 0)
        x = tf.where(inside, (boxes[..., 1] + boxes[..., 3]) / 2, 0.0)
        y = tf.where(inside, (boxes[..., 0] + boxes[..., 2]) / 2, 0.0)
        points = tf.stack([x, y, tf.where(inside, v, 0.0)], -1)
        flips = transformation.get("flips") if isinstance(transformation, dict) else None
        if pairs and flips is not None and getattr(layer, "mode", "") in ("horizontal", "horizontal_and_vertical"):
            order = list(range(points.shape[2]))
            for left, right in pairs:
                order[left], order[right] = right, left
            flipped = tf.reshape(tf.cast(flips, tf.bool), [-1, 1, 1, 1])
            points = tf.where(flipped, tf.gather(points, order, axis=2), points)
        moved["keypoints"] = points
    return moved
