"""Training: hardware-aware precision and distribution, schedules, callbacks, the fit loop with resume."""
from convforge._api import callable_package
from convforge.train.trainer import train

__all__ = ["train"]

callable_package(__name__, "train")
