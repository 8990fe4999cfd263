"""Tasks: a backbone plus the head, losses, metrics and decoding of one vision task."""
from convforge.backbones import build_backbone
from convforge.errors import ModelError, close_matches

TASKS = ("classification",)


def build_model(name, task="classification", num_classes=None, input_shape=None, **options):
    """Build the keras.Model of architecture `name` for `task` (classification for now; more tasks follow)."""
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}{close_matches(task, TASKS)}; accepted: {', '.join(TASKS)}")
    return build_backbone(name, input_shape=input_shape, num_classes=num_classes, include_top=True, **options)
