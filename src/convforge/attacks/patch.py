"""The adversarial patch (Brown et al. 2017): one square sticker, trained to make a classifier see a target class
wherever it lands, under random placement, scale and rotation (expectation over transformation), the
stop-sign-stickers experiment in miniature. It is scored on images it was not trained on, placed at random again.
"""
import dataclasses

import numpy as np

from convforge.attacks.target import AttackResult, white_box
from convforge.attacks.white_box import cross_entropy, perturbation_norm
from convforge.errors import ConvforgeError


@dataclasses.dataclass
class PatchResult(AttackResult):
    """An AttackResult over the held-out images (those the model did not already give the target class), with the
    patch itself (side x side x channels, in the clip scale), the target class and the held-out images' indices."""

    patch: np.ndarray = None
    target: int = 0
    held_out: np.ndarray = None
    train_success_rate: float = 0.0


def _placements(rng, count, image_size, side, scale, rotation):
    """Random (scale, angle, centre x, centre y) per image; the scaled patch's centre keeps it inside the image."""
    height, width = image_size
    s = rng.uniform(*scale, count)
    angle = np.deg2rad(rng.uniform(-rotation, rotation, count))
    half = side * s / 2
    cx = rng.uniform(half, np.maximum(width - half, half + 1e-3))
    cy = rng.uniform(half, np.maximum(height - half, half + 1e-3))
    return np.stack([s, angle, cx, cy], 1).astype(np.float32)


def paste(images, patch, placements):
    """Images with the patch drawn on each at its (scale, angle, centre x, centre y), differentiable in the patch."""
    import tensorflow as tf

    side = tf.cast(tf.shape(patch)[0], tf.float32)
    s, angle, cx, cy = (placements[:, i] for i in range(4))
    cos, sin = tf.cos(angle) / s, tf.sin(angle) / s
    # ImageProjectiveTransform maps each output pixel to the patch pixel it reads: rotate back, unscale, recentre.
    centre = side / 2
    transforms = tf.stack([cos, sin, centre - (cos * cx + sin * cy), -sin, cos, centre - (-sin * cx + cos * cy),
                           tf.zeros_like(s), tf.zeros_like(s)], 1)
    count = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    both = tf.concat([patch, tf.ones_like(patch[..., :1])], -1)  # the patch and its footprint
    drawn = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.repeat(both[None], count, 0), transforms=transforms, output_shape=size, fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    mask = drawn[..., -1:]
    return images * (1.0 - mask) + drawn[..., :-1] * mask


def adversarial_patch(model, images, target, *, size=0.3, steps=300, batch_size=32, learning_rate=0.05,
                      scale=(0.8, 1.2), rotation=20.0, held_out=0.25, seed=0, clip=(0.0, 1.0), preprocessing=None):
    """Train a square patch (side = size x the image's shorter side) that turns the model's predictions into the
    `target` class under random placement, scale (x `scale`) and rotation (+- `rotation` degrees), with Adam on
    its pixels for `steps` batches of the first (1 - held_out) of `images`; score it on the rest. Returns a
    PatchResult whose success_rate is the held-out images (not already of the target class) flipped to it."""
    import tensorflow as tf

    attacked = white_box(model, clip, preprocessing)
    xf, _ = attacked.check(images)
    target = int(target)
    if not 0 <= target < attacked.num_classes:
        raise ConvforgeError(f"target={target} is not a class of this model; accepted: 0..{attacked.num_classes - 1}")
    if not 0 < held_out < 1 or len(xf) < 2:
        raise ConvforgeError(f"held_out={held_out} with {len(xf)} images leaves nothing to train or to score; "
                             f"accepted: 0 < held_out < 1 and at least 2 images")
    height, width, channels = attacked.shape
    side = max(2, int(round(size * min(height, width))))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xf))
    cut = max(1, int(round(len(xf) * (1 - held_out))))
    train, test = order[:cut], order[cut:]
    lo, hi = attacked.lo, attacked.hi
    raw = tf.Variable(rng.normal(0, 0.5, (side, side, channels)).astype(np.float32))
    m, v = tf.Variable(tf.zeros_like(raw)), tf.Variable(tf.zeros_like(raw))
    wanted = tf.fill([batch_size], target)

    def as_patch(values):
        return lo + (hi - lo) * tf.sigmoid(values)

    @tf.function
    def step(batch, placements, t):
        with tf.GradientTape() as tape:
            logits = attacked.logits(paste(batch, as_patch(raw), placements))
            loss = tf.reduce_mean(cross_entropy(logits, wanted[:tf.shape(batch)[0]]))
        gradient = tape.gradient(loss, raw)
        m.assign(0.9 * m + 0.1 * gradient)
        v.assign(0.999 * v + 0.001 * tf.square(gradient))
        raw.assign_sub(learning_rate * (m / (1 - 0.9 ** t)) / (tf.sqrt(v / (1 - 0.999 ** t)) + 1e-8))
        return loss, tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1), target), tf.float32))

    hits = []
    for t in range(1, int(steps) + 1):
        batch = xf[rng.choice(train, min(batch_size, len(train)), replace=len(train) < batch_size)]
        placements = _placements(rng, len(batch), (height, width), side, scale, rotation)
        _, hit = step(tf.constant(batch), tf.constant(placements), tf.constant(float(t)))
        hits.append(float(hit))
    patch = as_patch(raw).numpy()
    clean = attacked.predict(xf[test]).argmax(1)
    scored = test[clean != target]
    placements = _placements(np.random.default_rng(seed + 1), len(scored), (height, width), side, scale, rotation)
    x_adv = paste(tf.constant(xf[scored]), tf.constant(patch), tf.constant(placements)).numpy() if len(scored) \
        else xf[scored]
    x_adv = np.clip(x_adv, lo, hi).astype(np.float32)
    predicted = attacked.predict(x_adv).argmax(1) if len(scored) else np.zeros(0, np.int64)
    last = hits[-max(1, len(hits) // 10):]
    return PatchResult(x_adv=x_adv, success=predicted == target, queries=np.zeros(len(scored), np.int64),
                       norm=perturbation_norm(x_adv, xf[scored], "l2"), attack="patch",
                       settings={"target": target, "size": size, "side": side, "steps": int(steps),
                                 "batch_size": batch_size, "learning_rate": learning_rate, "scale": list(scale),
                                 "rotation": rotation, "held_out": held_out, "seed": seed, "clip": [lo, hi]},
                       patch=patch, target=target, held_out=scored, train_success_rate=float(np.mean(last)))

