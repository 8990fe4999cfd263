"""White-box attacks: they read the model's gradients. Each runs batched inside tf.function.

FGSM (Goodfellow et al. 2015) takes one signed-gradient step; PGD (Madry et al. 2018) iterates it inside the eps
ball from a random start, keeping the best of several restarts; Carlini & Wagner's L2 attack (2017) searches for
the smallest perturbation that changes the class, through a tanh change of variables and a binary search on its
trade-off constant; DeepFool (Moosavi-Dezfooli et al. 2016) walks to the nearest linearized class boundary.
"""
import numpy as np

from convforge.attacks.target import BATCH, AttackResult, white_box
from convforge.errors import ConvforgeError

NORMS = ("linf", "l2")


def cross_entropy(logits, y):
    """Per-example cross-entropy of integer labels y on logits."""
    import tensorflow as tf

    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)


def loss_gradient(logits_fn, x, y, targeted=False):
    """(gradient, loss) of the per-example loss an attack climbs: cross-entropy of y, or its negative toward a
    target class y; examples do not mix (inference mode), so one backward pass gives every example's gradient."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = cross_entropy(logits_fn(x), y)
        if targeted:
            loss = -loss
        total = tf.reduce_sum(loss)
    return tape.gradient(total, x), loss


def _per_example(t):
    """Reduction axes of every dimension but the batch one."""
    return list(range(1, len(t.shape)))


def project(delta, eps, norm):
    """delta brought back into the eps ball of the norm."""
    import tensorflow as tf

    if norm == "linf":
        return tf.clip_by_value(delta, -eps, eps)
    size = tf.sqrt(tf.reduce_sum(tf.square(delta), _per_example(delta), keepdims=True))
    return delta * tf.minimum(1.0, eps / tf.maximum(size, 1e-12))


def ascend(gradient, step_size, norm):
    """The step up a gradient: its sign (linf) or its unit direction (l2), times step_size."""
    import tensorflow as tf

    if norm == "linf":
        return step_size * tf.sign(gradient)
    size = tf.sqrt(tf.reduce_sum(tf.square(gradient), _per_example(gradient), keepdims=True))
    return step_size * gradient / tf.maximum(size, 1e-12)


def pgd_delta(logits_fn, x, y, delta, eps, step_size, steps, norm="linf", targeted=False, clip=(0.0, 1.0)):
    """PGD's inner loop as TensorFlow ops (usable inside any tf.function, a training step included): `steps`
    projected steps from delta, the result kept inside the eps ball and x + delta inside the clip range."""
    import tensorflow as tf

    lo, hi = clip

    def step(i, delta):
        gradient, _ = loss_gradient(logits_fn, x + delta, y, targeted)
        delta = project(delta + ascend(gradient, step_size, norm), eps, norm)
        return i + 1, tf.clip_by_value(x + delta, lo, hi) - x

    # An explicit while_loop, not a Python loop under AutoGraph: Keras traces its train step without AutoGraph.
    return tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0), delta))[1]


def ball_sample(rng, shape, eps, norm):
    """A uniform draw from the eps ball (linf: per pixel; l2: a uniform direction and radius)."""
    if norm == "linf":
        return rng.uniform(-eps, eps, shape).astype(np.float32)
    direction = rng.standard_normal(shape)
    direction /= np.sqrt((direction ** 2).reshape(shape[0], -1).sum(1)).reshape(-1, *[1] * (len(shape) - 1))
    size = np.prod(shape[1:])
    radius = eps * rng.uniform(0, 1, (shape[0],) + (1,) * (len(shape) - 1)) ** (1.0 / size)
    return (direction * radius).astype(np.float32)


def perturbation_norm(x_adv, x, norm):
    """Per-example size of x_adv - x: the largest pixel change (linf) or the Euclidean length (l2)."""
    delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    if norm == "linf":
        return np.abs(delta).max(1) if delta.size else np.zeros(len(x))
    return np.sqrt((delta ** 2).sum(1))


def succeeded(predicted, y, targeted):
    """Whether each prediction is the target class (targeted) or not the true class (untargeted)."""
    return predicted == y if targeted else predicted != y


def as_input_dtype(x_adv, like):
    """x_adv in the dtype of the caller's images (rounded for integer pixels)."""
    like = np.asarray(like)
    if np.issubdtype(like.dtype, np.integer):
        return np.round(x_adv).astype(like.dtype)
    return x_adv.astype(like.dtype)


def _graph(target, key, build):
    """A tf.function cached on the target, built once per attack kind."""
    graphs = target.__dict__.setdefault("_graphs", {})
    if key not in graphs:
        graphs[key] = build()
    return graphs[key]


def _batches(n):
    """Slices of at most BATCH examples covering n."""
    return [slice(i, min(i + BATCH, n)) for i in range(0, n, BATCH)]


def _check_eps(eps, name="eps"):
    """eps as a positive float, or ConvforgeError."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ConvforgeError(f"{name}={eps!r} is not accepted; accepted: a positive number in the clip scale") \
            from None
    if not eps > 0:
        raise ConvforgeError(f"{name}={eps!r} is not accepted; accepted: a positive number in the clip scale")
    return eps


def _losses_and_predictions(target, x, y, targeted):
    """Per-example attack loss (the one climbed) and predicted classes of images x."""
    import tensorflow as tf

    def build():
        @tf.function(reduce_retracing=True)
        def run(images, labels):
            logits = target.logits(images)
            loss = cross_entropy(logits, labels)
            return (-loss if targeted else loss), tf.argmax(logits, -1)
        return run

    run = _graph(target, ("loss", targeted), build)
    losses, predicted = [], []
    for part in _batches(len(x)):
        loss, pred = run(tf.constant(x[part]), tf.constant(y[part]))
        losses.append(loss.numpy())
        predicted.append(pred.numpy())
    if not losses:
        return np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(losses), np.concatenate(predicted)


def fgsm(model, x, y, eps, *, targeted=False, clip=(0.0, 1.0), preprocessing=None):
    """Fast gradient sign method: x + eps * sign(gradient of the cross-entropy), clipped; toward class y when
    targeted (down the target's loss). One gradient call per example."""
    import tensorflow as tf

    eps = _check_eps(eps)
    target = white_box(model, clip, preprocessing)
    xf, y = target.check(x, y)

    def build():
        @tf.function(reduce_retracing=True)
        def run(images, labels):
            gradient, _ = loss_gradient(target.logits, images, labels, targeted)
            return tf.clip_by_value(images + eps * tf.sign(gradient), target.lo, target.hi)
        return run

    run = _graph(target, ("fgsm", targeted, eps), build)
    x_adv = np.concatenate([run(tf.constant(xf[p]), tf.constant(y[p])).numpy() for p in _batches(len(xf))]) \
        if len(xf) else xf.copy()
    _, predicted = _losses_and_predictions(target, x_adv, y, targeted)
    return AttackResult(as_input_dtype(x_adv, x), succeeded(predicted, y, targeted), np.ones(len(xf), np.int64),
                        perturbation_norm(x_adv, xf, "linf"), "fgsm",
                        {"eps": eps, "targeted": targeted, "clip": [target.lo, target.hi]})


def pgd(model, x, y, eps, *, norm="linf", steps=10, step_size=None, random_start=True, restarts=1, seed=0,
        targeted=False, clip=(0.0, 1.0), preprocessing=None):
    """Projected gradient descent in the eps ball of `norm` ("linf" or "l2"): `steps` steps of step_size
    (default eps / 4, Madry et al.'s CIFAR-10 ratio of 2/255 to 8/255) from a seeded random start, keeping per
    example the best of `restarts` runs (a success first, then the highest loss). steps * restarts gradient calls
    per example."""
    import tensorflow as tf

    if norm not in NORMS:
        raise ConvforgeError(f"norm={norm!r} is not accepted; accepted: {', '.join(NORMS)}")
    eps = _check_eps(eps)
    steps, restarts = int(steps), int(restarts)
    if steps < 1 or restarts < 1:
        raise ConvforgeError(f"steps={steps} and restarts={restarts} must be at least 1")
    step_size = _check_eps(step_size, "step_size") if step_size is not None else eps / 4
    target = white_box(model, clip, preprocessing)
    xf, y = target.check(x, y)
    clip = (target.lo, target.hi)

    def build():
        @tf.function(reduce_retracing=True)
        def run(images, labels, delta):
            return images + pgd_delta(target.logits, images, labels, delta, eps, step_size, steps, norm, targeted,
                                      clip)
        return run

    run = _graph(target, ("pgd", norm, targeted, eps, step_size, steps), build)
    rng = np.random.default_rng(seed)
    best = xf.copy()
    best_loss = np.full(len(xf), -np.inf)
    best_success = np.zeros(len(xf), bool)
    for _ in range(restarts):
        delta = ball_sample(rng, xf.shape, eps, norm) if random_start else np.zeros_like(xf)
        delta = np.clip(xf + delta, *clip) - xf
        x_adv = np.concatenate([run(tf.constant(xf[p]), tf.constant(y[p]), tf.constant(delta[p])).numpy()
                                for p in _batches(len(xf))]) if len(xf) else xf.copy()
        loss, predicted = _losses_and_predictions(target, x_adv, y, targeted)
        success = succeeded(predicted, y, targeted)
        better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
        best[better], best_loss[better], best_success[better] = x_adv[better], loss[better], success[better]
    return AttackResult(as_input_dtype(best, x), best_success, np.full(len(xf), steps * restarts, np.int64),
                        perturbation_norm(best, xf, norm), "pgd",
                        {"eps": eps, "norm": norm, "steps": steps, "step_size": step_size, "restarts": restarts,
                         "random_start": random_start, "seed": seed, "targeted": targeted, "clip": list(clip)})


def _margin(logits, y, targeted, confidence):
    """C&W's f: how far the logits are from the wanted decision (0 once reached with the confidence margin)."""
    import tensorflow as tf

    own = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1])
    label_logit = tf.reduce_sum(own * logits, -1)
    other = tf.reduce_max(logits - own * 1e9, -1)
    if targeted:
        return tf.maximum(other - label_logit + confidence, 0.0)
    return tf.maximum(label_logit - other + confidence, 0.0)


def carlini_wagner(model, x, y, *, targeted=False, confidence=0.0, c=1.0, binary_steps=6, steps=100,
                   learning_rate=0.05, clip=(0.0, 1.0), preprocessing=None):
    """Carlini & Wagner's L2 attack: minimize ||delta||^2 + c * f(x + delta) over a tanh-bounded image with
    Adam, binary-searching c per example from `c`; returns the smallest successful perturbation found (the
    input itself where none was). binary_steps * steps gradient calls per example."""
    import tensorflow as tf

    target = white_box(model, clip, preprocessing)
    xf, y = target.check(x, y)
    lo, hi = target.lo, target.hi
    steps, binary_steps = int(steps), int(binary_steps)
    if steps < 1 or binary_steps < 1:
        raise ConvforgeError(f"steps={steps} and binary_steps={binary_steps} must be at least 1")

    def to_image(w):
        return lo + (hi - lo) * (tf.tanh(w) + 1.0) / 2.0

    def build():
        @tf.function(reduce_retracing=True)
        def run(images, labels, const):
            w = tf.atanh(tf.clip_by_value((images - lo) / (hi - lo) * 2.0 - 1.0, -0.999999, 0.999999))
            m, v = tf.zeros_like(w), tf.zeros_like(w)
            best_l2 = tf.fill(tf.shape(labels), np.inf)
            best = images
            axes = _per_example(images)
            for t in tf.range(1, steps + 1):
                with tf.GradientTape() as tape:
                    tape.watch(w)
                    candidate = to_image(w)
                    logits = target.logits(candidate)
                    l2 = tf.reduce_sum(tf.square(candidate - images), axes)
                    loss = tf.reduce_sum(l2 + const * _margin(logits, labels, targeted, confidence))
                gradient = tape.gradient(loss, w)
                # Found with this step's image: a success (the wanted class, past the margin) shorter than before.
                # A success must hold with the margin: the true class lifted (or the target lowered) by it.
                predicted = tf.argmax(logits + confidence * tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1])
                                      * (-1.0 if targeted else 1.0), -1)
                hit = tf.equal(predicted, labels) if targeted else tf.not_equal(predicted, labels)
                better = hit & (l2 < best_l2)
                best_l2 = tf.where(better, l2, best_l2)
                best = tf.where(tf.reshape(better, [-1] + [1] * (len(images.shape) - 1)), candidate, best)
                m = 0.9 * m + 0.1 * gradient
                v = 0.999 * v + 0.001 * tf.square(gradient)
                step = tf.cast(t, tf.float32)
                m_hat, v_hat = m / (1 - 0.9 ** step), v / (1 - 0.999 ** step)
                w = w - learning_rate * m_hat / (tf.sqrt(v_hat) + 1e-8)
            return best, best_l2
        return run

    run = _graph(target, ("cw", targeted, confidence, steps, learning_rate), build)
    n = len(xf)
    const = np.full(n, float(c), np.float32)
    lower, upper = np.zeros(n), np.full(n, np.inf)
    best, best_l2 = xf.copy(), np.full(n, np.inf)
    for _ in range(binary_steps):
        found, l2 = [], []
        for p in _batches(n):
            image, size = run(tf.constant(xf[p]), tf.constant(y[p]), tf.constant(const[p]))
            found.append(image.numpy())
            l2.append(size.numpy())
        found, l2 = (np.concatenate(found), np.concatenate(l2)) if n else (xf, np.zeros(0))
        hit = np.isfinite(l2)
        better = hit & (l2 < best_l2)
        best[better], best_l2[better] = found[better], l2[better]
        # Found: try a smaller c (less weight on the class, more on the size); not found: a larger one.
        upper = np.where(hit, np.minimum(upper, const), upper)
        lower = np.where(hit, lower, np.maximum(lower, const))
        const = np.where(np.isfinite(upper), (lower + upper) / 2, const * 10).astype(np.float32)
    _, predicted = _losses_and_predictions(target, best, y, targeted)
    success = succeeded(predicted, y, targeted) & np.isfinite(best_l2)
    return AttackResult(as_input_dtype(best, x), success, np.full(n, steps * binary_steps, np.int64),
                        perturbation_norm(best, xf, "l2"), "carlini_wagner",
                        {"targeted": targeted, "confidence": confidence, "c": c, "binary_steps": binary_steps,
                         "steps": steps, "learning_rate": learning_rate, "clip": [lo, hi]})


def deepfool(model, x, y, *, steps=50, overshoot=0.02, candidates=10, clip=(0.0, 1.0), preprocessing=None):
    """DeepFool (L2): repeatedly step to the nearest class boundary of the model linearized around the current
    image, among the `candidates` classes ranked highest at the start, overshooting by `overshoot`; stops per
    example once its class changes. One gradient call (a Jacobian of the candidates) per example and step."""
    import tensorflow as tf

    target = white_box(model, clip, preprocessing)
    xf, y = target.check(x, y)
    k = max(2, min(int(candidates), target.num_classes))
    shape = [-1] + [1] * len(target.shape)

    def build():
        @tf.function(reduce_retracing=True)
        def run(images, total, ranked):
            current = tf.clip_by_value(images + (1 + overshoot) * total, target.lo, target.hi)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(current)
                logits = target.logits(current)
                chosen = tf.gather(logits, ranked, batch_dims=1)  # (B, k), the original class first
                parts = [tf.reduce_sum(chosen[:, j]) for j in range(k)]
            gradients = [tape.gradient(part, current) for part in parts]
            del tape
            f = chosen[:, 1:] - chosen[:, :1]  # (B, k-1): negative while the original class still leads
            w = tf.stack([g - gradients[0] for g in gradients[1:]], 1)  # (B, k-1, H, W, C)
            w_norm = tf.sqrt(tf.reduce_sum(tf.square(w), list(range(2, len(w.shape))))) + 1e-8
            distance = tf.abs(f) / w_norm
            nearest = tf.argmin(distance, -1)
            f_l = tf.gather(f, nearest, batch_dims=1)
            w_l = tf.gather(w, nearest, batch_dims=1)
            n_l = tf.gather(w_norm, nearest, batch_dims=1)
            step = tf.reshape((tf.abs(f_l) + 1e-4) / tf.square(n_l), shape) * w_l
            return step, tf.argmax(logits, -1)
        return run

    run = _graph(target, ("deepfool", k, overshoot), build)
    n = len(xf)
    total = np.zeros_like(xf)
    queries = np.zeros(n, np.int64)
    logits0 = np.log(np.maximum(target.predict(xf), 1e-30)) if n else np.zeros((0, target.num_classes))
    order = np.argsort(-logits0, -1)
    # The true class first, then the others by score: DeepFool measures every boundary from the true class.
    ranked = np.stack([np.concatenate([[label], [c for c in row if c != label]])[:k]
                       for label, row in zip(y, order)]) if n else np.zeros((0, k), np.int64)
    active = np.ones(n, bool)
    for _ in range(int(steps)):
        for p in _batches(n):
            idx = np.arange(p.start, p.stop)[active[p]]
            if not len(idx):
                continue
            step, predicted = run(tf.constant(xf[idx]), tf.constant(total[idx]), tf.constant(ranked[idx]))
            still = predicted.numpy() == y[idx]
            queries[idx] += 1
            # Examples already fooled keep their perturbation; the others take one more step.
            total[idx[still]] += step.numpy()[still]
            active[idx[~still]] = False
        if not active.any():
            break
    x_adv = np.clip(xf + (1 + overshoot) * total, target.lo, target.hi).astype(np.float32)
    _, predicted = _losses_and_predictions(target, x_adv, y, False)
    return AttackResult(as_input_dtype(x_adv, x), predicted != y, queries, perturbation_norm(x_adv, xf, "l2"),
                        "deepfool", {"steps": int(steps), "overshoot": overshoot, "candidates": k,
                                     "clip": [target.lo, target.hi]})
