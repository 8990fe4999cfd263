"""Choosing precision and distribution for the machine at hand, and what Keras needs to fit across workers."""
import json
import os

import tensorflow as tf

from convforge.cpu import cpu_has_bf16
from convforge.errors import RecipeError
from convforge.recipes.schema import DISTRIBUTIONS, PRECISIONS


def resolve_precision(name="auto"):
    """Return the Keras dtype policy name for a recipe's `precision` (auto: fp16 on GPU, bf16 on capable CPUs)."""
    if name not in PRECISIONS:
        raise RecipeError(f"train.precision: {name!r} is not one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def resolve_strategy(name="auto"):
    """Return the tf.distribute strategy for a recipe's `distribution` and the machine's devices."""
    if name not in DISTRIBUTIONS:
        raise RecipeError(f"train.distribution: {name!r} is not one of {', '.join(DISTRIBUTIONS)}")
    if name == "auto":
        if os.environ.get("TF_CONFIG") and len(json.loads(os.environ["TF_CONFIG"]).get("cluster", {}).get(
                "worker", [])) > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "none"
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise RecipeError("train.distribution: multi_worker needs the TF_CONFIG environment variable "
                              "describing the cluster (see tf.distribute.MultiWorkerMirroredStrategy)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError) as err:
        raise RecipeError(f"train.distribution: tpu was asked for but no TPU was found ({err})") from err
    return tf.distribute.TPUStrategy(resolver)


def in_multi_worker_mode(strategy):
    """True for a MultiWorkerMirroredStrategy whose cluster has more than one worker."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def fit_across_workers(model, strategy):
    """Make `model.fit`/`evaluate` work under MultiWorkerMirroredStrategy with several workers (Keras 3.15).

    Keras 3 fails there twice (keras-team/keras#20585, open):
      1. before fitting it builds the compiled losses and metrics from a first batch it averages across
         replicas with `strategy.reduce`, which cannot take an (images, targets) structure across workers;
         the build needs only shapes and dtypes, so this worker's own replica batch serves;
      2. each step's logs (scalars) are averaged with `strategy.reduce("MEAN", v, axis=0)`, and a scalar
         has no axis 0; reducing them with axis=None gives the cross-worker mean (the metric variables are
         summed across replicas on every update already, so it equals each worker's value).
    Both patches only replace paths that raise, so nothing that works today changes. No-op otherwise.
    """
    if not in_multi_worker_mode(strategy):
        return
    import keras

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    _patch_scalar_reduce()


def _patch_scalar_reduce():
    """Reduce scalar step outputs across workers with axis=None (see fit_across_workers, item 2); once."""
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "convforge_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if not (reduction in ("auto", "mean") and in_multi_worker_mode(strategy)):
            return original(values, strategy, reduction)

        def reduce(v):
            if isinstance(v, (tf.Tensor, tf.Variable)) and v.shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original(v, strategy, reduction)

        return keras.tree.map_structure(reduce, values)

    reduce_per_replica.convforge_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica
