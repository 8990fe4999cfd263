"""convforge under KERAS_BACKEND=jax: build, predict and one training step of three families, in a subprocess.

The backend is fixed when keras is first imported, so the JAX run happens in a fresh interpreter (the rest
of the suite runs on TensorFlow). The script prints one JSON line of results that the tests below check.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smallmodels import SMALL

if importlib.util.find_spec("jax") is None:  # checked without importing jax into this (TensorFlow) process
    pytest.skip("jax is not installed", allow_module_level=True)

SRC = Path(__file__).resolve().parents[1] / "src"
# name: build options; DenseNet as a small instance (the same layers), whose training step XLA compiles fast
MODELS = {"resnet18": {}, "googlenet": {"aux_logits": True},
          "densenet121": {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL["densenet"].items()}}
NUM_CLASSES = 5
# XLA's CPU compiler spends most of this test compiling the training steps (the full DenseNet-121's took over
# 100 s on two busy cores by default). These flags only trade the speed of the compiled code for the speed of
# compiling it; results are unchanged. XLA aborts on flags it does not know, so the run is retried without them.
FAST_COMPILE = ("--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0 "
                "--xla_llvm_disable_expensive_passes=true")

SCRIPT = textwrap.dedent(
    """
    import json, sys, time

    import numpy as np
    import keras
    from keras import ops

    assert keras.backend.backend() == "jax", keras.backend.backend()
    import convforge
    from convforge.layers import ImageFilter, LocalResponseNormalization

    results = {"backend": keras.backend.backend(), "tensorflow_imported": {}}
    results["tensorflow_imported"]["after_import"] = "tensorflow" in sys.modules
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, (4,))

    for name, options in MODELS.items():
        start = time.time()
        model = convforge.build_backbone(name, input_shape=(32, 32, 3), num_classes=NUM_CLASSES, **options)
        n_out = len(model.outputs)
        predictions = model.predict(x, batch_size=4, verbose=0)
        predictions = predictions if isinstance(predictions, (list, tuple)) else [predictions]
        # One loss per output: GoogLeNet's two auxiliary heads train alongside the main classifier.
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                      loss=["sparse_categorical_crossentropy"] * n_out)
        before = [ops.convert_to_numpy(w) for w in model.trainable_weights]
        loss = model.train_on_batch(x, [y] * n_out if n_out > 1 else y)
        after = [ops.convert_to_numpy(w) for w in model.trainable_weights]
        losses = np.atleast_1d(np.asarray(loss, dtype="float64"))
        results[name] = {
            "outputs": n_out,
            "shapes": [list(p.shape) for p in predictions],
            "finite": bool(all(np.isfinite(p).all() for p in predictions)),
            "probabilities_sum_to_one": bool(all(np.allclose(p.sum(-1), 1.0, atol=1e-4) for p in predictions)),
            "loss": losses.tolist(),
            "trainable_weights": len(before),
            "changed_weights": sum(not np.array_equal(a, b) for a, b in zip(before, after)),
            "seconds": round(time.time() - start, 1),
        }
    results["tensorflow_imported"]["after_builds"] = "tensorflow" in sys.modules

    # The two custom layers are written in keras.ops only: check them against NumPy, eagerly and jitted.
    image = rng.uniform(-1.0, 1.0, (2, 8, 8, 3)).astype("float32")
    filt = ImageFilter(("identity", "sobel_x"))
    filtered = ops.convert_to_numpy(filt(image))
    # depthwise output channels are ordered (input channel, kernel): identity of channel c sits at 2c.
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "float32")
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)))
    sobel_ref = sum(sobel[i, j] * padded[:, i:i + 8, j:j + 8, :] for i in range(3) for j in range(3))
    lrn = LocalResponseNormalization(depth=5, bias=2.0, alpha=1e-1, beta=0.75)
    features = rng.uniform(-3.0, 3.0, (2, 4, 4, 7)).astype("float32")
    normalized = ops.convert_to_numpy(lrn(features))
    sq = np.pad(features ** 2, ((0, 0), (0, 0), (0, 0), (2, 2)))
    window = sum(sq[..., i:i + 7] for i in range(5))
    lrn_ref = features / (2.0 + 1e-1 * window) ** 0.75
    inputs = keras.Input((8, 8, 3))
    jitted = keras.Model(inputs, LocalResponseNormalization()(ImageFilter("sobel_y")(inputs)))
    jitted_out = jitted.predict(image, verbose=0)
    results["layers"] = {
        "image_filter_shape": list(filtered.shape),
        "image_filter_identity_error": float(np.abs(filtered[..., 0::2] - image).max()),
        "image_filter_sobel_error": float(np.abs(filtered[..., 1::2] - sobel_ref).max()),
        "lrn_error": float(np.abs(normalized - lrn_ref).max()),
        "jitted_shape": list(jitted_out.shape),
        "jitted_finite": bool(np.isfinite(jitted_out).all()),
    }
    print("RESULTS " + json.dumps(results))
    """
).replace("NUM_CLASSES", str(NUM_CLASSES)).replace("MODELS", repr(MODELS))


def _run(xla_flags):
    env = dict(os.environ)
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p))
    if xla_flags:
        env["XLA_FLAGS"] = f"{xla_flags} {env.get('XLA_FLAGS', '')}".strip()  # the caller's flags win
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240,
                          cwd=SRC.parent)


@pytest.fixture(scope="module")
def jax_results():
    proc = _run(FAST_COMPILE)
    if proc.returncode != 0 and "Unknown flags in XLA_FLAGS" in proc.stderr:
        proc = _run(None)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, (
        f"the JAX subprocess failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return json.loads(lines[-1][len("RESULTS "):])


def test_runs_on_the_jax_backend(jax_results):
    assert jax_results["backend"] == "jax"


@pytest.mark.parametrize("name", MODELS)
def test_forward_and_one_training_step(jax_results, name):
    r = jax_results[name]
    expected_outputs = 3 if name == "googlenet" else 1  # GoogLeNet with aux_logits: [main, aux1, aux2]
    assert r["outputs"] == expected_outputs
    assert r["shapes"] == [[4, NUM_CLASSES]] * expected_outputs
    assert r["finite"], f"{name}: non-finite predictions under JAX"
    assert r["probabilities_sum_to_one"], f"{name}: softmax outputs do not sum to 1"
    # train_on_batch returns the total loss, then (with several outputs) each output's loss.
    assert len(r["loss"]) == (1 if expected_outputs == 1 else 1 + expected_outputs), r["loss"]
    assert all(v == v and abs(v) != float("inf") and v > 0 for v in r["loss"]), f"{name}: loss {r['loss']}"
    assert r["changed_weights"] > 0, f"{name}: one training step changed none of {r['trainable_weights']} weights"
    # Every trainable weight gets a gradient: the auxiliary heads and the whole trunk train.
    assert r["changed_weights"] == r["trainable_weights"], r


def test_custom_layers_run_on_jax(jax_results):
    r = jax_results["layers"]
    assert r["image_filter_shape"] == [2, 8, 8, 6]
    assert r["image_filter_identity_error"] < 1e-6
    assert r["image_filter_sobel_error"] < 1e-5
    assert r["lrn_error"] < 1e-5
    assert r["jitted_shape"] == [2, 8, 8, 3] and r["jitted_finite"]
