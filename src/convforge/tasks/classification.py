"""Image classification: softmax over classes, top-1/top-5 accuracy, confusion matrix."""
import numpy as np

from convforge.tasks import register_task
from convforge.tasks.base import Parser, Task


def _label(example, context):
    """The image-level class id."""
    return example["label"]


def _one_hot(target, num_classes):
    """A class id as a one-hot float32 distribution (for label smoothing, MixUp and CutMix)."""
    import tensorflow as tf

    return tf.one_hot(target, num_classes, dtype=tf.float32)


@register_task
class Classification(Task):
    """Classify the whole image into one of num_classes; GoogLeNet's auxiliary heads join the training loss.

    Target: the int32 class id, or a float32 one-hot (num_classes,) when the recipe softens labels.
    """

    name = "classification"
    uses_classification_top = True
    trains_adversarially = True
    parser = Parser(keeps_record=lambda r: r.get("label") is not None, keeps_example=lambda e: e["label"] >= 0,
                    target=_label, one_hot=_one_hot)

    def build_model(self, architecture, input_shape, num_classes, options=None, dtype=None):
        """Return the backbone with its classification top."""
        from convforge.backbones import build_backbone

        return build_backbone(architecture, input_shape=input_shape, num_classes=num_classes, include_top=True,
                              dtype=dtype, **(options or {}))

    def compile_args(self, model, label_smoothing=0.0, one_hot=False, aux_loss_weight=0.3):
        """Cross-entropy on every output (auxiliary ones weighted), accuracy and top-5 on the main one."""
        import keras

        if one_hot or label_smoothing:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
            metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
            top_k = keras.metrics.TopKCategoricalAccuracy
        else:
            loss = keras.losses.SparseCategoricalCrossentropy()
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
            top_k = keras.metrics.SparseTopKCategoricalAccuracy
        if model.outputs[0].shape[-1] > 5:
            metrics.append(top_k(k=5, name="top5_accuracy"))
        n_out = len(model.outputs)
        if n_out == 1:
            return dict(loss=loss, metrics=metrics)
        return dict(loss=[loss] * n_out, loss_weights=[1.0] + [aux_loss_weight] * (n_out - 1),
                    metrics=[metrics] + [[] for _ in range(n_out - 1)])

    def adapt_targets(self, model, targets):
        """Give each auxiliary classifier the same labels as the main one."""
        n_out = len(model.outputs)
        return targets if n_out == 1 else tuple([targets] * n_out)

    def inference_model(self, model):
        """Drop GoogLeNet's auxiliary classifiers, which exist only to help training."""
        from convforge.heads.classification import strip_aux

        return strip_aux(model)

    @classmethod
    def recognizes(cls, model):
        """One (batch, classes) output."""
        return len(model.outputs) == 1 and not isinstance(model.output, dict) and len(model.output.shape) == 2

    def evaluate(self, model, dataset, class_names, out_dir=None, source=None):
        """Top-1 and top-5 accuracy and the confusion matrix (written as PNG and kept in the result)."""
        import keras

        if isinstance(model, keras.Model):
            model = self.inference_model(model)
        labels, probs = [], []
        for images, targets in dataset:
            probs.append(np.asarray(model(images, training=False), dtype="float32"))
            t = np.asarray(targets)
            labels.append(t.argmax(-1) if t.ndim == 2 else t)
        probs, labels = np.concatenate(probs), np.concatenate(labels).astype(int)
        k = min(5, probs.shape[1])
        top_k = np.argsort(-probs, axis=1)[:, :k]
        n = probs.shape[1]
        confusion = np.zeros((n, n), dtype=int)
        np.add.at(confusion, (labels, probs.argmax(1)), 1)
        eps = 1e-7
        ce = -np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0)))
        result = {"accuracy": float((top_k[:, 0] == labels).mean()),
                  "top5_accuracy": float((top_k == labels[:, None]).any(axis=1).mean()),
                  "loss": float(ce), "count": int(len(labels)), "confusion_matrix": confusion.tolist()}
        if out_dir is not None:
            plot_confusion(confusion, class_names, f"{out_dir}/confusion_matrix.png")
        return result

    def describe(self, outputs, class_names, top_k=3):
        """The top_k classes with their probabilities."""
        probs = np.asarray(outputs, dtype="float32").reshape(-1)
        order = np.argsort(-probs)[:top_k]
        return [{"class": _name(class_names, i), "probability": float(probs[i])} for i in order]


def _name(class_names, index):
    """Return the class name of an index, or the index as text when names are unknown."""
    return class_names[index] if class_names and index < len(class_names) else str(index)


def plot_confusion(confusion, class_names, path):
    """Write a confusion matrix (rows: true class, columns: predicted) as a PNG."""
    from matplotlib.figure import Figure

    from convforge.atomic import replacing

    n = confusion.shape[0]
    names = [_name(class_names, i) for i in range(n)]
    fig = Figure(figsize=(1.2 + 0.45 * n, 1.0 + 0.45 * n), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(confusion, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    with replacing(path, "wb") as handle:
        fig.savefig(handle, format="png")

