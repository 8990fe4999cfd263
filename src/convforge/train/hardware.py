"""Choosing precision and distribution for the machine at hand."""
import json
import os

import tensorflow as tf

from convforge.errors import RecipeError
from convforge.recipes.schema import DISTRIBUTIONS, PRECISIONS


def cpu_has_bf16():
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where mixed_bfloat16 pays off."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
