"""Learning-rate schedules from a recipe's `train.schedule`: constant, step, cosine and one-cycle, with warm-up."""
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="convforge")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps`, then `after` (constant, step, cosine or one-cycle decay).

    One class for every shape keeps serialization and resume simple: the rate is a pure function of the step.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, kind="constant", boundaries=(), factor=0.1,
                 min_ratio=0.0, start_ratio=0.0):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.kind, self.boundaries, self.factor = kind, tuple(int(b) for b in boundaries), float(factor)
        self.min_ratio, self.start_ratio = float(min_ratio), float(start_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warm_rate = self.peak * (self.start_ratio + (1.0 - self.start_ratio) * ops.minimum(step / warm, 1.0))
        after = ops.maximum(step - self.warmup_steps, 0.0)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        if self.kind == "cosine":
            cos = 0.5 * (1.0 + ops.cos(math.pi * ops.minimum(after / span, 1.0)))
            rate = self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cos)
        elif self.kind == "step":
            drops = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
            rate = self.peak * ops.power(self.factor, drops)
        elif self.kind == "one_cycle":
            # Anneal from the peak to peak * min_ratio with a cosine, as PyTorch's OneCycleLR does.
            cos = 0.5 * (1.0 + ops.cos(math.pi * ops.minimum(after / span, 1.0)))
            rate = self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cos)
        else:
            rate = self.peak * ops.ones_like(step)
        if self.warmup_steps <= 0:
            return rate
        return ops.where(step < self.warmup_steps, warm_rate, rate)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind, "boundaries": list(self.boundaries), "factor": self.factor,
                "min_ratio": self.min_ratio, "start_ratio": self.start_ratio}


def make_schedule(schedule, learning_rate, steps_per_epoch, epochs):
    """Return the learning-rate schedule a recipe's schedule section describes."""
    total = max(1, steps_per_epoch * epochs)
    name = schedule.name
    if name == "constant":
        return WarmupSchedule(learning_rate, total)
    if name == "step":
        return WarmupSchedule(learning_rate, total, kind="step", factor=schedule.factor,
                              boundaries=[b * steps_per_epoch for b in schedule.boundaries_epochs])
    if name == "cosine":
        return WarmupSchedule(learning_rate, total, warmup_steps=round(schedule.warmup_epochs * steps_per_epoch),
                              kind="cosine", min_ratio=schedule.min_lr_ratio)
    if name == "one_cycle":
        peak = schedule.max_lr or learning_rate
        # PyTorch's defaults: start at max_lr / 25, end at max_lr / 1e4.
        return WarmupSchedule(peak, total, warmup_steps=round(schedule.warmup_fraction * total),
                              kind="one_cycle", start_ratio=1 / 25, min_ratio=1 / 1e4)
    raise ValueError(f"unknown schedule {name!r}")


def scaled_copy(optimizer, factor=1.0):
    """A fresh optimizer of the same kind and settings whose learning rate (a float or a WarmupSchedule) is
    `factor` times this one's; a LossScaleOptimizer stays one around the copy."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return keras.optimizers.LossScaleOptimizer(scaled_copy(inner, factor))
    config = optimizer.get_config()
    rate = config["learning_rate"]
    if isinstance(rate, dict):
        rate = keras.saving.deserialize_keras_object(rate)
    if isinstance(rate, WarmupSchedule):
        rate = WarmupSchedule.from_config({**rate.get_config(), "peak": rate.peak * factor})
    elif isinstance(rate, (int, float)):
        rate = float(rate) * factor
    elif factor != 1.0:
        raise ValueError(f"cannot scale a learning rate of type {type(rate).__name__}; accepted: a number or a "
                         f"convforge schedule")
    return optimizer.__class__.from_config({**config, "learning_rate": rate})
