"""Adversarial training (recipe `train.adversarial`): each training batch is partly replaced by PGD examples
crafted against the model as it is at that step (Madry et al. 2018 with mix 1; Kurakin et al. 2017's mixed
batches below 1), and the run reports its accuracy under PGD next to its clean accuracy.

The pipeline hands the model normalized inputs; the attack works on the pixel scale 0..1 through the run's
preprocessing contract, so `eps: 0.1` is a tenth of the pixel range whatever the normalization.
"""

from convforge.attacks.target import WhiteBox, dataset_pixels
from convforge.attacks.white_box import pgd_delta


def step_size(settings):
    """The PGD step of the settings: their own, or eps / 4 (as convforge.attacks.pgd)."""
    return settings.step_size or settings.eps / 4


def train_adversarially(model, preprocessing, settings, seed=0):
    """Make model.fit train on PGD examples: its train step replaces the first `mix` share of each batch by
    their adversarial versions, then takes Keras' own step on the result (loss, gradients, metrics)."""
    import tensorflow as tf

    target = WhiteBox(model, (0.0, 1.0), preprocessing)
    keras_step = type(model).train_step
    size = step_size(settings)

    def train_step(data):
        x, y = data[0], data[1]
        labels = y if y.dtype.is_integer else tf.argmax(y, -1)
        count = tf.cast(tf.math.ceil(settings.mix * tf.cast(tf.shape(x)[0], tf.float32)), tf.int32)
        pixels = (tf.cast(x[:count], tf.float32) - target.b) / target.a
        if settings.norm == "linf":
            start = tf.random.uniform(tf.shape(pixels), -settings.eps, settings.eps, seed=seed)
        else:
            start = tf.zeros_like(pixels)
        start = tf.clip_by_value(pixels + start, 0.0, 1.0) - pixels
        delta = pgd_delta(target.logits, pixels, labels[:count], start, settings.eps, size, settings.steps,
                          settings.norm, False, (0.0, 1.0))
        crafted = tf.cast(target.inputs(tf.stop_gradient(pixels + delta)), x.dtype)
        return keras_step(model, (tf.concat([crafted, x[count:]], 0), *data[1:]))

    model.train_step = train_step
    return model


def robust_accuracy(model, dataset, preprocessing, settings, limit=1000):
    """{"robust_accuracy", "robust_attack"}: accuracy under PGD with the settings' eps and eval_steps on up to
    `limit` examples of a (normalized input, label) dataset, next to the clean accuracy on the same examples."""
    from convforge.attacks import pgd

    target = WhiteBox(model, (0.0, 1.0), preprocessing)
    x, y = dataset_pixels(dataset, target, limit)
    result = pgd(target, x, y, settings.eps, norm=settings.norm, steps=settings.eval_steps, seed=0)
    robust = target.predict(result.x_adv).argmax(1) == y
    clean = target.predict(x).argmax(1) == y
    return {"robust_accuracy": float(robust.mean()), "clean_accuracy_attacked_set": float(clean.mean()),
            "robust_attack": f"pgd {settings.norm} eps={settings.eps:g} steps={settings.eval_steps} "
                             f"on {len(y)} val images"}
