"""What a task is: the one place that knows a model's head, its losses, metrics and how to read predictions."""


class Task:
    """Base class of tasks; subclasses fill in the head, losses, metrics and decoding."""

    name = ""
    # The one number an artifact is judged by (a key of evaluate()'s result), a fraction in [0, 1].
    headline_metric = "accuracy"
    # Whether the data pipeline must deliver one-hot (soft) labels, e.g. for label smoothing or MixUp.
    needs_one_hot = False

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """Return the keras.Model for this task on the named backbone."""
        raise NotImplementedError

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """Return keyword arguments for model.compile: loss, loss_weights, metrics."""
        raise NotImplementedError

    def adapt_targets(self, model, targets):
        """Map the pipeline's targets onto the model's outputs (e.g. repeat labels for auxiliary heads)."""
        return targets

    def inference_model(self, model):
        """Return the model to evaluate and export (training-only outputs removed)."""
        return model

    def evaluate(self, model, dataset, class_names, out_dir=None):
        """Return task metrics over a dataset as {name: float}, writing any plots into out_dir."""
        raise NotImplementedError

    def score(self, predict, batches, class_names=()):
        """The headline metric of predict(images) -> outputs (any runtime) over (images, targets) batches."""
        return self.evaluate(_Predictor(predict), batches, list(class_names))[self.headline_metric]

    def describe(self, outputs, class_names, top_k=3):
        """Turn one image's model outputs into a printable result (top classes, a box ...)."""
        raise NotImplementedError


class _Predictor:
    """Lets evaluate() call a runtime's predict function the way it calls a Keras model."""

    def __init__(self, predict):
        self.predict = predict

    def __call__(self, images, training=False):
        return self.predict(images)
