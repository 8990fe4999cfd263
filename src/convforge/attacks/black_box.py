"""Black-box attacks: they call the target only through predict(x) -> class probabilities, never a gradient, so
an exported TFLite or ONNX model is as good a target as a Keras one. Every call carries all the examples still
being attacked, and each example's queries are counted.

Square Attack (Andriushchenko et al. 2020) and SimBA (Guo et al. 2019) read the scores; HopSkipJump (Chen et al.
2020) only the decided class; a transfer attack crafts its examples on a surrogate model it can differentiate.
"""
import numpy as np

from convforge.attacks.target import AttackResult, as_predict, check_clip, check_images, check_labels
from convforge.attacks.white_box import _check_eps, as_input_dtype, perturbation_norm, succeeded
from convforge.errors import ConvforgeError

# Square Attack's schedule of the square's share of the image, written for 10,000 iterations (the paper's):
# after each of these iterations the share halves.
SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _check_images(x, clip):
    """(x as float32 images inside the clip range, lo, hi), or ConvforgeError."""
    lo, hi = check_clip(clip)
    return check_images(x, (lo, hi)), lo, hi


def _scores(predict, images, n_classes=None):
    """predict's probabilities as float64 (N, classes), checked."""
    if not len(images):
        return np.zeros((0, n_classes or 1))
    probabilities = np.asarray(predict(images), np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(images):
        raise ConvforgeError(f"predict returned shape {probabilities.shape} for {len(images)} images; accepted: "
                             f"(N, classes) probabilities")
    return probabilities


def margin(probabilities, y, targeted):
    """The score attacks push below zero: log p(y) - max other log p (untargeted), or the reverse toward y."""
    logp = np.log(np.maximum(probabilities, 1e-30))
    own = logp[np.arange(len(y)), y]
    others = logp.copy()
    others[np.arange(len(y)), y] = -np.inf
    best_other = others.max(1)
    return best_other - own if targeted else own - best_other


def _square_share(p_init, iteration, max_queries):
    """The fraction of the image a Square Attack window covers at this iteration."""
    at = int(iteration / max(max_queries, 1) * 10000)
    return p_init / 2 ** sum(at > step for step in SQUARE_HALVINGS)


def square(predict, x, y, eps, *, max_queries=1000, p_init=0.3, targeted=False, seed=0, clip=(0.0, 1.0)):
    """Square Attack (linf): from vertical stripes of +-eps, propose random squares of +-eps per channel, keep
    those that lower the margin loss; the square shrinks on the paper's schedule. At most max_queries calls'
    worth of queries per example (the first included); stops for an example at its first success."""
    predict = as_predict(predict, clip)
    eps = _check_eps(eps)
    xf, lo, hi = _check_images(x, clip)
    n, height, width, channels = xf.shape
    rng = np.random.default_rng(seed)
    x_adv = np.clip(xf + eps * rng.choice([-1.0, 1.0], size=(n, 1, width, channels)), lo, hi).astype(np.float32)
    probabilities = _scores(predict, x_adv)
    y = check_labels(y, n, probabilities.shape[1])
    loss = margin(probabilities, y, targeted)
    queries = np.ones(n, np.int64)
    for iteration in range(1, int(max_queries)):
        active = np.flatnonzero(loss >= 0)
        if not len(active):
            break
        share = _square_share(p_init, iteration, max_queries)
        side = int(np.clip(round(np.sqrt(share * height * width)), 1, min(height, width) - 1))
        proposal = x_adv[active].copy()
        tops = rng.integers(0, height - side + 1, len(active))
        lefts = rng.integers(0, width - side + 1, len(active))
        signs = rng.choice([-1.0, 1.0], size=(len(active), channels)) * eps
        for j, (example, top, left) in enumerate(zip(active, tops, lefts)):
            window = (slice(top, top + side), slice(left, left + side))
            proposal[j][window] = np.clip(xf[example][window] + signs[j], lo, hi)
        new_loss = margin(_scores(predict, proposal), y[active], targeted)
        queries[active] += 1
        better = new_loss < loss[active]
        x_adv[active[better]] = proposal[better]
        loss[active[better]] = new_loss[better]
    success = loss < 0
    return AttackResult(as_input_dtype(x_adv, x), success, queries, perturbation_norm(x_adv, xf, "linf"), "square",
                        {"eps": eps, "max_queries": int(max_queries), "p_init": p_init, "targeted": targeted,
                         "seed": seed, "clip": [lo, hi]})


def simba(predict, x, y, eps, *, max_queries=1000, targeted=False, seed=0, clip=(0.0, 1.0)):
    """SimBA in the pixel basis: take the coordinates in a seeded random order and move each by -eps, else +eps,
    keeping a move only if the label's probability falls (untargeted) or the target's rises. Every coordinate
    moves at most once, so the linf size stays <= eps; `norm` reports the L2 size, SimBA's measure."""
    predict = as_predict(predict, clip)
    eps = _check_eps(eps)
    xf, lo, hi = _check_images(x, clip)
    n = len(xf)
    flat = xf.reshape(n, -1).copy()
    size = flat.shape[1]
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n, size)), 1)
    probabilities = _scores(predict, xf)
    y = check_labels(y, n, probabilities.shape[1])
    score = probabilities[np.arange(n), y]
    done = succeeded(probabilities.argmax(1), y, targeted)
    queries = np.ones(n, np.int64)
    sign = 1.0 if targeted else -1.0  # the label's probability must rise (targeted) or fall
    for step in range(size):
        active = np.flatnonzero(~done & (queries < max_queries))
        if not len(active):
            break
        coordinate = order[active, step]
        for direction in (-1.0, 1.0):  # the second direction only where the first did not help
            if not len(active):
                break
            proposal = flat[active].copy()
            rows = np.arange(len(active))
            proposal[rows, coordinate] = np.clip(proposal[rows, coordinate] + direction * eps, lo, hi)
            p = _scores(predict, proposal.reshape(len(active), *xf.shape[1:]))
            queries[active] += 1
            new = p[rows, y[active]]
            better = sign * (new - score[active]) > 0
            flat[active[better]] = proposal[better]
            score[active[better]] = new[better]
            done[active[better]] = succeeded(p[better].argmax(1), y[active[better]], targeted)
            keep = ~better & (queries[active] < max_queries)
            active, coordinate = active[keep], coordinate[keep]
    x_adv = flat.reshape(xf.shape)
    return AttackResult(as_input_dtype(x_adv, x), done, queries, perturbation_norm(x_adv, xf, "l2"), "simba",
                        {"eps": eps, "max_queries": int(max_queries), "targeted": targeted, "seed": seed,
                         "basis": "pixel", "clip": [lo, hi]})


class _Decisions:
    """The decision-based view of predict: is each image adversarial for its example; counts queries."""

    def __init__(self, predict, y, targeted, queries, chunk=4096):
        self.predict, self.y, self.targeted, self.queries, self.chunk = predict, y, targeted, queries, chunk

    def __call__(self, images, examples):
        """Whether images (one per entry of `examples`, an example index each) are adversarial."""
        if not len(images):
            return np.zeros(0, bool)
        classes = np.concatenate([_scores(self.predict, images[i:i + self.chunk]).argmax(1)
                                  for i in range(0, len(images), self.chunk)])
        np.add.at(self.queries, examples, 1)
        return succeeded(classes, self.y[examples], self.targeted)


def _bisect(decide, x, adversarial, examples, threshold, lo, hi):
    """Move each adversarial image toward its original along the line between them, to the boundary (within
    threshold of the line's length): returns the boundary-side adversarial images."""
    low = np.zeros(len(examples))  # blend weight of the adversarial image: 0 = original, 1 = adversarial
    high = np.ones(len(examples))
    shape = (-1,) + (1,) * (x.ndim - 1)
    while True:
        open_ = np.flatnonzero(high - low > threshold)
        if not len(open_):
            break
        middle = (low[open_] + high[open_]) / 2
        w = middle.reshape(shape)
        candidate = np.clip((1 - w) * x[examples[open_]] + w * adversarial[open_], lo, hi).astype(np.float32)
        hit = decide(candidate, examples[open_])
        high[open_[hit]] = middle[hit]
        low[open_[~hit]] = middle[~hit]
    w = high.reshape(shape)
    return np.clip((1 - w) * x[examples] + w * adversarial, lo, hi).astype(np.float32)


def hop_skip_jump(predict, x, y, *, targeted=False, max_queries=2000, init_evals=50, max_evals=400, gamma=1.0,
                  starts=None, seed=0, clip=(0.0, 1.0)):
    """HopSkipJump (L2, decision-based): start from an adversarial image (uniform noise, or `starts` when given:
    images already classified as wanted, e.g. of the target class), walk to the boundary by bisection, then
    repeat: estimate the boundary's normal from sign-only probes, step along it with a geometrically shrinking
    size, bisect back to the boundary. Stops per example near max_queries; failures keep the input."""
    predict = as_predict(predict, clip)
    xf, lo, hi = _check_images(x, clip)
    n = len(xf)
    rng = np.random.default_rng(seed)
    queries = np.zeros(n, np.int64)
    probabilities = _scores(predict, xf)
    y = check_labels(y, n, probabilities.shape[1])
    queries += 1
    decide = _Decisions(predict, y, targeted, queries)
    dims = int(np.prod(xf.shape[1:]))
    threshold = gamma / (dims * np.sqrt(dims))
    # Initialization: an adversarial starting image per example.
    current = xf.copy()
    found = succeeded(probabilities.argmax(1), y, targeted)  # already adversarial: nothing to search
    if starts is not None:
        starts = np.asarray(starts, np.float32)
        if starts.shape != xf.shape:
            raise ConvforgeError(f"starts has shape {starts.shape}; accepted: {xf.shape}, one start per image")
        ok = ~found & decide(starts, np.arange(n))
        current[ok], found[ok] = starts[ok], True
    for _ in range(100):
        todo = np.flatnonzero(~found)
        if not len(todo):
            break
        noise = rng.uniform(lo, hi, (len(todo),) + xf.shape[1:]).astype(np.float32)
        ok = decide(noise, todo)
        current[todo[ok]], found[todo[ok]] = noise[ok], True
    ready = np.flatnonzero(found & (current != xf).reshape(n, -1).any(1))
    if len(ready):
        current[ready] = _bisect(decide, xf, current[ready], ready, threshold, lo, hi)
    shape = (-1,) + (1,) * (xf.ndim - 1)
    for iteration in range(1, 10 ** 6):
        evals = int(min(init_evals * np.sqrt(iteration), max_evals))
        live = np.flatnonzero(found & (queries + evals + 40 <= max_queries) &
                              (current != xf).reshape(n, -1).any(1))
        if not len(live):
            break
        distance = np.sqrt(((current[live] - xf[live]) ** 2).reshape(len(live), -1).sum(1))
        delta = np.sqrt(dims) * threshold * distance
        # Gradient direction at the boundary from the signs of `evals` random probes around each image.
        probes = rng.standard_normal((len(live), evals) + xf.shape[1:]).astype(np.float32)
        probes /= np.sqrt((probes ** 2).reshape(len(live), evals, -1).sum(2)).reshape(len(live), evals,
                                                                                     *[1] * (xf.ndim - 1))
        around = np.clip(current[live][:, None] + delta.reshape(-1, 1, *[1] * (xf.ndim - 1)) * probes, lo, hi)
        u = (around - current[live][:, None]) / delta.reshape(-1, 1, *[1] * (xf.ndim - 1))
        signs = 2.0 * decide(around.reshape(-1, *xf.shape[1:]).astype(np.float32), np.repeat(live, evals)) - 1.0
        signs = signs.reshape(len(live), evals)
        mean = signs.mean(1, keepdims=True)
        # Baseline subtraction (the paper's variance reduction), except where every probe agreed.
        centred = np.where(np.abs(mean) == 1.0, signs, signs - mean)
        direction = (centred.reshape(len(live), evals, *[1] * (xf.ndim - 1)) * u).mean(1)
        direction /= np.maximum(np.sqrt((direction ** 2).reshape(len(live), -1).sum(1)), 1e-12).reshape(shape)
        # Geometric step-size search: halve until the step lands on the adversarial side.
        size = distance / np.sqrt(iteration)
        stepped = np.clip(current[live] + size.reshape(shape) * direction, lo, hi).astype(np.float32)
        pending = np.arange(len(live))
        for _ in range(12):
            hit = decide(stepped[pending], live[pending])
            pending = pending[~hit]
            if not len(pending):
                break
            size[pending] /= 2
            stepped[pending] = np.clip(current[live[pending]] + size[pending].reshape(shape) * direction[pending],
                                       lo, hi)
        moved = np.setdiff1d(np.arange(len(live)), pending)
        if len(moved):
            current[live[moved]] = _bisect(decide, xf, stepped[moved], live[moved], threshold, lo, hi)
    success = found
    return AttackResult(as_input_dtype(current, x), success, queries, perturbation_norm(current, xf, "l2"),
                        "hop_skip_jump", {"targeted": targeted, "max_queries": int(max_queries),
                                          "init_evals": init_evals, "max_evals": max_evals, "gamma": gamma,
                                          "seed": seed, "clip": [lo, hi]})


def transfer(surrogate_model, predict, x, y, attack="pgd", *, targeted=False, clip=(0.0, 1.0), preprocessing=None,
             **settings):
    """A transfer attack: craft examples with a white-box attack ("fgsm", "pgd", "carlini_wagner", "deepfool") on
    a surrogate Keras model, then judge them on the target through predict alone (one query per example)."""
    from convforge.attacks import white_box

    attacks = {"fgsm": white_box.fgsm, "pgd": white_box.pgd, "carlini_wagner": white_box.carlini_wagner,
               "deepfool": white_box.deepfool}
    if attack not in attacks:
        raise ConvforgeError(f"transfer attack={attack!r} is not accepted; accepted: {', '.join(attacks)}")
    predict = as_predict(predict, clip)
    if attack in ("carlini_wagner", "fgsm", "pgd"):
        settings["targeted"] = targeted
    elif targeted:
        raise ConvforgeError("deepfool is untargeted; accepted: targeted=False, or another attack")
    crafted = attacks[attack](surrogate_model, x, y, clip=clip, preprocessing=preprocessing, **settings)
    xf, _, _ = _check_images(crafted.x_adv, clip)
    probabilities = _scores(predict, xf)
    y = check_labels(y, len(xf), probabilities.shape[1])
    success = succeeded(probabilities.argmax(1), y, targeted)
    return AttackResult(crafted.x_adv, success, np.ones(len(xf), np.int64), crafted.norm, "transfer",
                        {"surrogate_attack": attack, "surrogate_success_rate": crafted.success_rate,
                         **crafted.settings})
