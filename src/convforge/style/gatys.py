"""Gatys, Ecker & Bethge (CVPR 2016): optimize the image itself so its VGG features keep the content image's
(conv4_2) and its Gram matrices match the style image's (conv1_1 .. conv5_1), with a total-variation term.

L-BFGS (scipy's L-BFGS-B, the pixels bounded to 0..1) is the paper's optimizer and the default; Adam is there for
comparison. The image is optimized at `size` pixels on its longer side and returned at the content's own size.
"""
import numpy as np

from convforge.errors import ConvforgeError
from convforge.style.features import (CONTENT_LAYERS, STYLE_LAYERS, FeatureExtractor, content_loss, fit_size, gram,
                                      style_loss, total_variation)

OPTIMIZERS = ("lbfgs", "adam")


def gatys(content, style, *, steps=200, size=256, content_weight=1.0, style_weight=10.0, tv_weight=1.0,
          optimizer="lbfgs", learning_rate=0.02, architecture="vgg19", vgg_weights=None, init="content", seed=0,
          progress=None):
    """Stylize `content` (uint8 H x W x 3) with `style` by image optimization; returns (uint8 image at the content's
    size, {"loss", "content_loss", "style_loss", "tv_loss", "steps"} of the last step).

    init: "content" (start from the content image, as most implementations) or "noise" (the paper's white noise).
    progress: a callable taking one line every few steps (None: silent).
    """
    import tensorflow as tf

    if optimizer not in OPTIMIZERS:
        raise ConvforgeError(f"optimizer {optimizer!r} is not accepted; accepted: {', '.join(OPTIMIZERS)}")
    if init not in ("content", "noise"):
        raise ConvforgeError(f"init {init!r} is not accepted; accepted: content, noise")
    content = np.asarray(content)
    target = fit_size(content, size) / 255.0
    style_image = fit_size(np.asarray(style), size) / 255.0
    height, width = target.shape[:2]
    extractor = FeatureExtractor(STYLE_LAYERS + CONTENT_LAYERS, architecture, vgg_weights, (height, width, 3), seed)
    # The style image is seen at its own size: Gram matrices do not depend on where things are.
    style_extractor = FeatureExtractor(STYLE_LAYERS, architecture, vgg_weights, style_image.shape, seed)
    style_grams = {name: gram(f) for name, f in style_extractor(style_image[None]).items()}
    content_features = {name: f for name, f in extractor(target[None]).items() if name in CONTENT_LAYERS}

    def losses(image):
        features = extractor(image)
        parts = {"content_loss": content_weight * content_loss(features, content_features)[0],
                 "style_loss": style_weight * style_loss(features, style_grams)[0],
                 "tv_loss": tv_weight * total_variation(image)[0]}
        return tf.add_n(list(parts.values())), parts

    @tf.function
    def value_and_gradient(image):
        with tf.GradientTape() as tape:
            tape.watch(image)
            total, parts = losses(image)
        return total, tape.gradient(total, image), parts

    rng = np.random.default_rng(seed)
    start = target if init == "content" else rng.uniform(0, 1, target.shape).astype(np.float32)
    say = progress or (lambda *_: None)
    last = {}
    if optimizer == "lbfgs":
        from scipy.optimize import minimize

        shape = (1, height, width, 3)
        calls = [0]

        def fun(flat):
            total, gradient, parts = value_and_gradient(tf.constant(flat.reshape(shape), tf.float32))
            calls[0] += 1
            last.update({k: float(v) for k, v in parts.items()}, loss=float(total))
            return float(total), gradient.numpy().astype(np.float64).ravel()

        def report(_):
            report.iteration += 1
            if report.iteration % 20 == 0:
                say(f"gatys: step {report.iteration}/{steps} loss {last['loss']:.4f}")
        report.iteration = 0
        result = minimize(fun, start.astype(np.float64).ravel(), jac=True, method="L-BFGS-B",
                          bounds=[(0.0, 1.0)] * start.size, callback=report,
                          options={"maxiter": int(steps), "maxfun": int(steps) * 2})
        image = result.x.reshape(height, width, 3)
        done = report.iteration
    else:
        import keras

        image = tf.Variable(start[None])
        adam = keras.optimizers.Adam(learning_rate)
        for step in range(1, int(steps) + 1):
            total, gradient, parts = value_and_gradient(image)
            adam.apply_gradients([(gradient, image)])
            image.assign(tf.clip_by_value(image, 0.0, 1.0))
            last.update({k: float(v) for k, v in parts.items()}, loss=float(total))
            if step % 20 == 0:
                say(f"gatys: step {step}/{steps} loss {last['loss']:.4f}")
        image = image.numpy()[0]
        done = int(steps)
    out = tf.image.resize(image[None] * 255.0, content.shape[:2], method="bicubic")[0].numpy()
    return np.clip(np.round(out), 0, 255).astype(np.uint8), {**last, "steps": done, "size": [height, width],
                                                             "pretrained": extractor.pretrained}
