"""Cycle-consistent adversarial training (Zhu et al., ICCV 2017): two generators (A -> B and B -> A) and two
PatchGAN discriminators learn together from unpaired pictures of two domains.

Each step: the generators are scored by the discriminators (least-squares or non-saturating GAN loss), by how well
a round trip returns the picture (cycle loss, weight `cycle_weight`, one or one per domain) and by how little they
change a picture already in their target domain (identity loss, `identity_weight` x that domain's cycle weight, as
CycleGAN weighs it); the
discriminators then learn real pictures against generated ones drawn from an image pool of earlier generations.
`CycleGAN` is a keras.Model whose `fit` takes (pictures of A, pictures of B) batches on 0..1 and logs every
loss per epoch; calling it translates A -> B.
"""
import keras
import tensorflow as tf

from convforge.heads.discriminators import ImagePool, cycle_loss, discriminator_loss, generator_loss, r1_scores

NETWORKS = ("generator_ab", "generator_ba", "discriminator_a", "discriminator_b")
ROW_TITLES = ("A", "A -> B", "A -> B -> A", "B", "B -> A", "B -> A -> B")
LOSS_NAMES = ("generator_ab_loss", "generator_ba_loss", "discriminator_a_loss", "discriminator_b_loss",
              "cycle_loss", "identity_loss", "r1_penalty")


@keras.saving.register_keras_serializable(package="convforge")
class CycleGAN(keras.Model):
    """Two generators and two discriminators trained as one; `call` is the A -> B generator."""

    def __init__(self, generator_ab, generator_ba, discriminator_a, discriminator_b, *, gan_loss="least_squares",
                 cycle_weight=10.0, identity_weight=0.5, pool_size=50, seed=0, discriminator_lr_ratio=1.0,
                 r1_weight=0.0, **kwargs):
        super().__init__(**kwargs)
        self.generator_ab, self.generator_ba = generator_ab, generator_ba
        self.discriminator_a, self.discriminator_b = discriminator_a, discriminator_b
        # One weight for both round trips, or (A -> B -> A, B -> A -> B) as CycleGAN's lambda_A and lambda_B: a
        # translation that drops information (texture -> flat) cannot return it, so its round trip weighs less.
        pair = tuple(cycle_weight) if isinstance(cycle_weight, (list, tuple)) else (cycle_weight, cycle_weight)
        self.cycle_weights = tuple(float(w) for w in pair)
        self.gan_loss, self.identity_weight = gan_loss, float(identity_weight)
        # Heusel et al.'s two time-scale rule (TTUR): a discriminator that learns faster gives the generators a
        # useful gradient sooner.
        self.discriminator_lr_ratio = float(discriminator_lr_ratio)
        # R1 (Mescheder et al. 2018): a penalty on the discriminators' slope at real pictures, gamma / 2 x it, so
        # what they learn points from generated pictures toward real ones instead of anywhere that scores real.
        self.r1_weight = float(r1_weight)
        shape = tuple(generator_ab.inputs[0].shape[1:])
        self.pool_a, self.pool_b = ImagePool(pool_size, shape, seed), ImagePool(pool_size, shape, seed + 1)
        # The penalty is logged (the sum over both discriminators) only when it is part of the loss.
        names = LOSS_NAMES if self.r1_weight > 0 else LOSS_NAMES[:-1]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.val_trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "psnr")}

    def get_config(self):
        """The four networks (serialized whole) and the loss settings, so a checkpoint of it loads back."""
        networks = {name: keras.saving.serialize_keras_object(getattr(self, name)) for name in NETWORKS}
        return {**super().get_config(), **networks, "gan_loss": self.gan_loss, "cycle_weight": list(self.cycle_weights),
                "identity_weight": self.identity_weight, "pool_size": self.pool_a.size,
                "discriminator_lr_ratio": self.discriminator_lr_ratio, "r1_weight": self.r1_weight}

    @classmethod
    def from_config(cls, config):
        """Rebuild from get_config's description."""
        config = dict(config)
        networks = [keras.saving.deserialize_keras_object(config.pop(name)) for name in NETWORKS]
        return cls(*networks, **config)

    @property
    def metrics(self):
        """The per-epoch means of every loss (reset by fit at each epoch)."""
        return list(self.trackers.values()) + list(self.val_trackers.values())

    def compile(self, optimizer, discriminator_optimizer=None, **kwargs):
        """Set the generators' optimizer and the discriminators' (default: a fresh copy of the generators' at
        `discriminator_lr_ratio` times its learning rate; CycleGAN trains both with Adam 2e-4, beta_1 0.5); a
        LossScaleOptimizer (mixed_float16) scales both."""
        from convforge.train.schedules import scaled_copy

        super().compile(optimizer=optimizer, **kwargs)
        if discriminator_optimizer is None:
            discriminator_optimizer = scaled_copy(optimizer, self.discriminator_lr_ratio)
        self.generator_optimizer, self.discriminator_optimizer = optimizer, discriminator_optimizer
        # Built here, not inside the first traced step, so their slots are made once, eagerly.
        optimizer.build(self._generator_variables())
        discriminator_optimizer.build(self._discriminator_variables())

    def _generator_variables(self):
        return self.generator_ab.trainable_variables + self.generator_ba.trainable_variables

    def _discriminator_variables(self):
        return self.discriminator_a.trainable_variables + self.discriminator_b.trainable_variables

    def call(self, images, training=False):
        """Translate pictures of domain A into domain B."""
        return self.generator_ab(images, training=training)

    def generator_losses(self, real_a, real_b, training=True):
        """The generators' objective and its terms for a batch of each domain: {"fake_a", "fake_b",
        "adversarial_ab", "adversarial_ba", "cycle_a", "cycle_b", "identity_a", "identity_b", "total"}, where
        total = the adversarial terms + w_A (cycle_a + identity_weight identity_a) + w_B (the same for B), each
        domain's identity term weighed by that domain's cycle weight as in CycleGAN."""
        kind = self.gan_loss
        fake_b = self.generator_ab(real_a, training=training)
        fake_a = self.generator_ba(real_b, training=training)
        terms = {"fake_a": fake_a, "fake_b": fake_b,
                 "adversarial_ab": generator_loss(self.discriminator_b(fake_b, training=training), kind),
                 "adversarial_ba": generator_loss(self.discriminator_a(fake_a, training=training), kind),
                 "cycle_a": cycle_loss(real_a, self.generator_ba(fake_b, training=training)),
                 "cycle_b": cycle_loss(real_b, self.generator_ab(fake_a, training=training)),
                 "identity_a": cycle_loss(real_a, self.generator_ba(real_a, training=training)),
                 "identity_b": cycle_loss(real_b, self.generator_ab(real_b, training=training))}
        weight_a, weight_b = self.cycle_weights
        terms["total"] = (terms["adversarial_ab"] + terms["adversarial_ba"]
                          + weight_a * (terms["cycle_a"] + self.identity_weight * terms["identity_a"])
                          + weight_b * (terms["cycle_b"] + self.identity_weight * terms["identity_b"]))
        return terms

    def train_step(self, data):
        """One update of both generators, then of both discriminators; returns the running loss means."""
        real_a, real_b = data[0], data[1]
        kind = self.gan_loss
        with tf.GradientTape(persistent=True) as tape:
            terms = self.generator_losses(real_a, real_b)
            fake_a, fake_b, generators = terms["fake_a"], terms["fake_b"], terms["total"]
            shown_b = self.pool_b.query(tf.stop_gradient(fake_b))
            shown_a = self.pool_a.query(tf.stop_gradient(fake_a))
            real_scores, penalty = {}, tf.constant(0.0)
            for domain, discriminator, real in (("a", self.discriminator_a, real_a),
                                                ("b", self.discriminator_b, real_b)):
                if self.r1_weight > 0:
                    real_scores[domain], slope = r1_scores(discriminator, real)
                    penalty += slope
                else:
                    real_scores[domain] = discriminator(real, training=True)
            loss_b = discriminator_loss(real_scores["b"], self.discriminator_b(shown_b, training=True), kind)
            loss_a = discriminator_loss(real_scores["a"], self.discriminator_a(shown_a, training=True), kind)
            discriminators = loss_a + loss_b + 0.5 * self.r1_weight * penalty
            # Scaled for a LossScaleOptimizer (mixed_float16), unchanged otherwise; apply() unscales.
            scaled_generators = self.generator_optimizer.scale_loss(generators)
            scaled_discriminators = self.discriminator_optimizer.scale_loss(discriminators)
        generator_variables = self._generator_variables()
        self.generator_optimizer.apply_gradients(zip(tape.gradient(scaled_generators, generator_variables),
                                                     generator_variables))
        discriminator_variables = self._discriminator_variables()
        self.discriminator_optimizer.apply_gradients(zip(tape.gradient(scaled_discriminators,
                                                                       discriminator_variables),
                                                         discriminator_variables))
        del tape
        values = (terms["adversarial_ab"], terms["adversarial_ba"], loss_a, loss_b,
                  terms["cycle_a"] + terms["cycle_b"], terms["identity_a"] + terms["identity_b"], penalty)
        for name, value in zip(self.trackers, values):
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, data):
        """Validation on pictures of A: the round trip's L1 (`loss`) and, against paired ground truth in the
        targets ({"paired": ...}), the translations' PSNR."""
        images, targets = data[0], data[1]
        fake_b = self.generator_ab(images, training=False)
        cycled = cycle_loss(images, self.generator_ba(fake_b, training=False))
        self.val_trackers["loss"].update_state(cycled)
        if isinstance(targets, dict) and "paired" in targets:
            truth = tf.cast(targets["paired"], tf.float32)
            picture = tf.clip_by_value(tf.cast(fake_b, tf.float32), 0.0, 1.0)
            self.val_trackers["psnr"].update_state(tf.reduce_mean(tf.image.psnr(picture, truth, 1.0)))
            return {name: tracker.result() for name, tracker in self.val_trackers.items()}
        return {"loss": self.val_trackers["loss"].result()}


class SampleGrid(keras.callbacks.Callback):
    """After every epoch, a PNG of fixed pictures through both generators: rows A, A -> B, A -> B -> A, then B,
    B -> A, B -> A -> B (samples/epoch_NNN.png in the run folder), to watch the translation form."""

    def __init__(self, pictures_a, pictures_b, folder):
        super().__init__()
        self.pictures_a, self.pictures_b, self.folder = pictures_a, pictures_b, folder

    def on_epoch_end(self, epoch, logs=None):
        """Write this epoch's grid."""
        import numpy as np

        from convforge.visualize import draw_picture_grid

        model = self.model
        rows = []
        for pictures, there, back in ((self.pictures_a, model.generator_ab, model.generator_ba),
                                      (self.pictures_b, model.generator_ba, model.generator_ab)):
            moved = np.asarray(there(pictures, training=False), np.float32)
            rows += [pictures, moved, np.asarray(back(moved, training=False), np.float32)]
        self.folder.mkdir(parents=True, exist_ok=True)
        draw_picture_grid(rows, self.folder / f"epoch_{epoch + 1:03d}.png", ROW_TITLES)
