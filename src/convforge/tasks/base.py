"""What a task is: the one place that knows a model's head, its losses, metrics, data targets and decoding.

A task is a `Task` subclass registered with `@register_task` under its `name`. It declares everything the rest
of convforge asks a task for, so no module outside tasks/ branches on a task's name:

- `Options`: the typed `head:` section of a recipe (head and loss settings), a pydantic model (`options_class`
  picks one per head where a task has several);
- `levels`: the backbone feature levels its head reads (checked against the registry before building);
- `annotations`: the annotation kinds its targets are made of ("label", "boxes", ...), which every
  augmentation of its recipe must carry (`convforge check` refuses one that cannot);
- `parser`: which records qualify and what target each example trains on (TF Model Garden's parser);
- `build_model`, `compile_args`, `adapt_targets`, `inference_model`: the model and how it trains;
- `evaluate` / `headline_metric` / `higher_is_better`: how it is measured and which number judges exports;
- `describe` / `draw`: what `convforge predict` prints and draws for one image; `recognizes`: whether a bare model is its kind.

Importing a task module must not import TensorFlow or Keras (recipes are validated without them): Keras work
happens inside the methods.
"""
import dataclasses
from typing import Callable

from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    """The head section of a task that takes no options."""

    model_config = ConfigDict(extra="forbid")


@dataclasses.dataclass(frozen=True)
class Parser:
    """A task's view of an example: which records qualify and what target it trains on."""

    keeps_record: Callable  # record dict -> bool (Records, checked in Python so emptiness is known early)
    keeps_example: Callable  # example dict of tensors -> tf.bool (Examples, checked in the graph)
    target: Callable  # (example dict of tensors, data.instances.ParseContext) -> target tensors
    # target, num_classes -> soft (one-hot) target, for label smoothing and label-mixing augmentations;
    # None where the target has no class distribution to soften.
    one_hot: Callable | None = None
    # The target of evaluation examples when it differs from training's (as TF Model Garden splits
    # parse_train_data and parse_eval_data: e.g. encoded anchor targets to train on, plain ground truth to
    # score against); None: `target` for both.
    eval_target: Callable | None = None
    # (record, aspect of the model's input, width / height) -> the records (views) it trains as, each with a
    # normalized "crop" box of its image (one crop per person for a top-down keypoint model); None: each record
    # is one example of the whole image.
    views: Callable | None = None

    def examples_of(self, records, aspect=1.0):
        """The records (or their views) that make examples, in order."""
        kept = [r for r in records if self.keeps_record(r)]
        return [v for r in kept for v in self.views(r, aspect)] if self.views else kept


class Task:
    """Base class of tasks; subclasses fill in the head, losses, metrics, targets and decoding."""

    name = ""
    # The one number an artifact is judged by (a key of evaluate()'s result), a fraction in [0, 1].
    headline_metric = "accuracy"
    higher_is_better = True
    # The annotation kinds the task's targets are made of; augmentations must carry each of them.
    annotations = frozenset({"label"})
    # The backbone levels its head reads (e.g. ("C3", "C4", "C5")); () reads only the backbone's last level.
    levels = ()
    # Whether model.options may hold options of the architecture's classification top (dropout, fc_units ...).
    uses_classification_top = False
    # Whether its inference model ends in NonMaxSuppression, so detector-only export formats can hold it.
    ends_in_nms = False
    # Whether train.adversarial applies: the model's first output is class scores an attack can climb.
    trains_adversarially = False
    # The architectures a recipe may name (None: every registered one; (): none, the task builds its networks
    # from its head section), and the data.normalize the model is written for (None: any), both checked when a
    # recipe is validated.
    architectures = None
    # How many picture domains its recipe reads: 2 adds data.domain_b (and data.paired_val), zipped with train.
    domains = 1
    input_normalization = None
    Options = NoOptions
    parser: Parser = None

    def __init__(self, options=None, **kwargs):
        """Validate the head options (a dict or an Options instance, plus keyword overrides)."""
        if isinstance(options, BaseModel):
            options = options.model_dump()
        options = {**(options or {}), **kwargs}
        self.options = self.options_class(options).model_validate(options)

    @classmethod
    def options_class(cls, options):
        """The pydantic class that validates a `head:` section (tasks with several heads choose by its name)."""
        return cls.Options

    def label_names(self, class_names, source=None):
        """The names of the model's outputs given the dataset's classes and its source (segmentation adds the
        background; keypoints are named by the source's keypoint names)."""
        return list(class_names)

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """Return the keras.Model for this task on the named backbone (options: the backbone's)."""
        raise NotImplementedError

    def public_model(self, model):
        """What convforge.build_model hands a user for the model `build_model` made: by default that model."""
        return model

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """Return keyword arguments for model.compile: loss, loss_weights, metrics."""
        raise NotImplementedError

    def adapt_targets(self, model, targets):
        """Map the pipeline's targets onto the model's outputs (e.g. repeat labels for auxiliary heads)."""
        return targets

    def pair(self, model, images, targets):
        """The (input, target) a training or validation batch becomes; by default the images and adapt_targets'
        targets (a task whose target is the picture itself returns the images twice)."""
        return images, self.adapt_targets(model, targets)

    @classmethod
    def head_defaults(cls, architecture):
        """Head options a recipe's other sections decide (merged under the recipe's own `head:`)."""
        return {}

    def inference_model(self, model):
        """Return the model to evaluate and export (training-only outputs removed)."""
        return model

    def other_models(self, model):
        """{file name: model} saved beside model.keras (a translation's B -> A generator); by default none."""
        return {}

    def callbacks(self, model, data, run_dir):
        """Keras callbacks the task adds to a training run (data: the run's train.datasets.RunData)."""
        return []

    def scores_export(self, recipe, direction):
        """Whether the val split can score an export of this direction's model (else outputs are only compared)."""
        return direction == "a2b"

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """Return task metrics over a dataset as {name: float}, writing any plots or result files into out_dir;
        source: what the dataset was built from (Records, in order), for results in the dataset's own terms."""
        raise NotImplementedError

    def score(self, predict, batches, class_names=()):
        """The headline metric of predict(images) -> outputs (any runtime) over (images, targets) batches."""
        return self.evaluate(_Predictor(predict), batches, list(class_names))[self.headline_metric]

    def describe(self, outputs, class_names, top_k=3):
        """Turn one image's model outputs into a printable result (top classes, a box ...)."""
        raise NotImplementedError

    def draw(self, image, outputs, class_names, out_path):
        """Write a PNG of one image (uint8 H, W, C) with what `describe` found on it (boxes, or the top classes
        as a caption); tasks whose outputs are pictures (masks, keypoints) draw those instead."""
        from convforge.visualize import draw_predictions

        return draw_predictions(image, self.describe(outputs, class_names), out_path)

    @classmethod
    def recognizes(cls, model):
        """Whether a bare model's outputs have this task's structure (for a .keras without its recipe)."""
        return False

    def spatial_of(self, targets):
        """The spatial kinds of a batch's targets that a geometric augmentation moves: {"boxes" (B, N, 4)
        normalized yxyx, "masks" (B, N, H, W), "keypoints" (B, N, K, 3)}; by default the keys of padded
        instance targets (data.instances.pad_instances)."""
        if not isinstance(targets, dict):
            return {}
        return {kind: targets[kind] for kind in ("boxes", "masks", "keypoints") if kind in targets}

    def with_spatial(self, targets, moved):
        """The targets with their moved kinds; an instance whose box left the image is no longer valid."""
        targets = {**targets, **moved}
        if "valid" in targets and "boxes" in moved:
            boxes = moved["boxes"]
            kept = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
            targets["valid"] = targets["valid"] & kept
        return targets


class _Predictor:
    """Lets evaluate() call a runtime's predict function the way it calls a Keras model."""

    def __init__(self, predict):
        self.predict = predict

    def __call__(self, images, training=False):
        return self.predict(images)
