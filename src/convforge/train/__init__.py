"""Training: hardware-aware precision and distribution, schedules, callbacks, the fit loop with resume."""
from convforge.train.trainer import train

__all__ = ["train"]
