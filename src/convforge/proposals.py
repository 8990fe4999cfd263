"""Class-agnostic object proposals the way R-CNN got them: image segments grouped bottom-up (selective search,
Uijlings et al., IJCV 2013), computed in NumPy outside the graph and brought into a Keras model as a layer.

`selective_search` over-segments an image with Felzenszwalb & Huttenlocher's graph method
(`skimage.segmentation.felzenszwalb`, once per `scales` entry), then repeatedly merges the two most similar
neighbouring regions until one is left, and proposes the box of every region it ever had: the segments and
each merge. Similarity is selective search's colour (histogram intersection of 25-bin per-channel colour
histograms), size (small regions merge first) and fill (regions whose boxes fit together merge first); its
texture term is left out. Boxes are ranked as the paper does (a region's depth from the top of its hierarchy
times a random number, here from a fixed seed so the same image always gives the same list), near duplicates
(IoU > `duplicate_iou`) dropped, and the best `max_proposals` kept.

`SelectiveSearch` is that function as a layer: images (B, H, W, C) -> (boxes (B, P, 4) normalized yxyx padded
with zeros, valid (B, P) float 1/0). It runs through `tf.numpy_function`, so a model holding it runs in
TensorFlow (fit, predict, evaluate, a .keras file loaded in a fresh process) but cannot be exported to a graph
format (SavedModel, TFLite, ONNX hold no Python). Proposals are memoized by image content: training sees each
image every epoch and R-CNN computes its proposals once per image (the paper cached them on disk).
"""
import collections
import concurrent.futures
import hashlib
import heapq
import os
import threading

import keras
import numpy as np

_BINS = 25  # colour histogram bins per channel (selective search's choice)


def selective_search(image, scales=(100.0, 300.0), sigma=0.8, min_size=20, max_proposals=100, min_side=4,
                     duplicate_iou=0.9):
    """Object proposals for one image (H, W, C) of any value range: (N, 4) float32 normalized yxyx boxes,
    N <= max_proposals, best ranked first.

    scales: Felzenszwalb's `scale` per over-segmentation (larger: fewer, larger segments; each gives its own
    hierarchy); sigma and min_size: its smoothing and smallest segment in pixels. Boxes narrower or lower than
    min_side pixels are dropped.
    """
    from skimage.segmentation import felzenszwalb

    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    # Any normalization the pipeline applied (mean/std) is undone up to scale: segmentation sees [0, 1].
    low, high = float(image.min()), float(image.max())
    image = (image - low) / max(high - low, 1e-6)
    height, width = image.shape[:2]
    candidates, depths = [], []
    for scale in scales:
        gray = image.shape[-1] == 1
        labels = felzenszwalb(image[..., 0] if gray else image, scale=float(scale), sigma=sigma,
                              min_size=int(min_size), channel_axis=None if gray else -1)
        boxes, depth = _hierarchy(image, labels)
        candidates.append(boxes)
        depths.append(depth)
    boxes = np.concatenate(candidates).astype(np.float32)
    depth = np.concatenate(depths).astype(np.float64)
    # Selective search's ranking: depth from the top of the hierarchy times a random number, ascending.
    order = np.argsort(depth * np.random.default_rng(0).random(len(depth)), kind="stable")
    boxes = boxes[order]
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    boxes = boxes[np.all(sides >= min_side, axis=1)]
    kept = _drop_duplicates(boxes, duplicate_iou, max_proposals)
    return (kept / np.array([height, width, height, width], np.float32)).astype(np.float32)


def _hierarchy(image, labels):
    """Every region of one grouping hierarchy as pixel boxes (R, 4) yxyx (exclusive max) and each one's depth
    (1: the last merge, the whole connected image)."""
    from scipy import ndimage

    count = int(labels.max()) + 1
    channels = image.shape[-1]
    flat = labels.ravel()
    area = float(labels.size)
    size = np.bincount(flat, minlength=count).astype(np.float64)
    box = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop]
                    for s in ndimage.find_objects(labels + 1)], np.float64)
    bins = np.minimum((image * _BINS).astype(np.int64), _BINS - 1).reshape(-1, channels)
    hist = np.zeros((count, channels * _BINS))
    for c in range(channels):
        hist[:, c * _BINS:(c + 1) * _BINS] = np.bincount(flat * _BINS + bins[:, c],
                                                         minlength=count * _BINS).reshape(count, _BINS)
    hist /= np.maximum(hist.sum(1, keepdims=True), 1.0)
    # Neighbours: regions that touch horizontally or vertically.
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    size, box, hist = list(size), list(box), list(hist)
    neighbours = collections.defaultdict(set)
    for a, b in pairs:
        neighbours[int(a)].add(int(b))
        neighbours[int(b)].add(int(a))

    def similarity(a, b):
        y0, x0 = min(box[a][0], box[b][0]), min(box[a][1], box[b][1])
        y1, x1 = max(box[a][2], box[b][2]), max(box[a][3], box[b][3])
        together = size[a] + size[b]
        colour = np.minimum(hist[a], hist[b]).sum() / channels
        return colour + (1.0 - together / area) + (1.0 - ((y1 - y0) * (x1 - x0) - together) / area)

    heap = [(-similarity(int(a), int(b)), int(a), int(b)) for a, b in pairs]
    heapq.heapify(heap)
    alive = set(range(count))
    while heap:
        _, a, b = heapq.heappop(heap)
        if a not in alive or b not in alive:
            continue
        new = len(size)
        size.append(size[a] + size[b])
        box.append(np.concatenate([np.minimum(box[a][:2], box[b][:2]), np.maximum(box[a][2:], box[b][2:])]))
        hist.append((hist[a] * size[a] + hist[b] * size[b]) / size[new])
        alive -= {a, b}
        alive.add(new)
        for m in (neighbours.pop(a) | neighbours.pop(b)) - {a, b}:
            neighbours[m] -= {a, b}
            neighbours[m].add(new)
            neighbours[new].add(m)
            heapq.heappush(heap, (-similarity(new, m), new, m))
    # Depth: merges counted from the last one (1), then the segments below every merge.
    total = len(size)
    depth = np.concatenate([np.full(count, total - count + 1.0), np.arange(total - count, 0, -1.0)])
    return np.asarray(box), depth


def _drop_duplicates(boxes, iou, limit):
    """The first `limit` boxes (in order) that overlap no earlier kept one by more than `iou`."""
    kept = []
    for b in boxes:
        if kept:
            k = np.asarray(kept)
            inter = (np.clip(np.minimum(k[:, 2], b[2]) - np.maximum(k[:, 0], b[0]), 0, None)
                     * np.clip(np.minimum(k[:, 3], b[3]) - np.maximum(k[:, 1], b[1]), 0, None))
            union = (k[:, 2] - k[:, 0]) * (k[:, 3] - k[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if np.any(inter > iou * union):
                continue
        kept.append(b)
        if len(kept) == limit:
            break
    return np.asarray(kept, np.float32).reshape(-1, 4)


class _Memo:
    """A bounded, thread-safe map from (settings, image bytes digest) to proposals, oldest entries dropped."""

    def __init__(self, capacity=200_000):
        self.capacity, self.entries, self.lock = capacity, collections.OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            return self.entries.get(key)

    def put(self, key, value):
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)

    def clear(self):
        """Forget every memoized image (timing cold proposals, or freeing memory)."""
        with self.lock:
            self.entries.clear()


# Shared by every SelectiveSearch layer; the key holds the layer's settings, so two settings never mix.
MEMO = _Memo()
_POOL, _POOL_LOCK = [], threading.Lock()


def _pool():
    """The threads proposals are computed on (one per core), started on first use."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="proposals"))
        return _POOL[0]


@keras.saving.register_keras_serializable(package="convforge")
class SelectiveSearch(keras.layers.Layer):
    """images (B, H, W, C) -> (boxes (B, P, 4) normalized yxyx, zero-padded; valid (B, P) float32 1/0):
    `selective_search` on each image, P = max_proposals. Memoized by image content when `memoize`."""

    receptive_field_passthrough = True
    export_refusal = ("computes its proposals in Python (tf.numpy_function), which SavedModel, TFLite and ONNX "
                      "cannot hold; accepted: the model in Keras, or its CNN alone "
                      "(convforge.heads.rcnn.proposal_classifier(model))")

    def __init__(self, max_proposals=100, scales=(100.0, 300.0), sigma=0.8, min_size=20, min_side=4,
                 duplicate_iou=0.9, memoize=True, **kwargs):
        super().__init__(**kwargs)
        self.max_proposals, self.scales = int(max_proposals), [float(s) for s in scales]
        self.sigma, self.min_size, self.min_side = float(sigma), int(min_size), int(min_side)
        self.duplicate_iou, self.memoize = float(duplicate_iou), bool(memoize)
        # A Python callback cannot be compiled by XLA.
        self.supports_jit = False

    def settings(self):
        """The arguments selective_search is called with."""
        return dict(scales=tuple(self.scales), sigma=self.sigma, min_size=self.min_size,
                    max_proposals=self.max_proposals, min_side=self.min_side, duplicate_iou=self.duplicate_iou)

    def propose(self, images):
        """NumPy: the padded boxes (B, P, 4) and valid flags (B, P) of a batch of images."""
        images = np.asarray(images, np.float32)
        settings = self.settings()
        tag = repr(sorted(settings.items()))
        keys = [(tag, image.shape, hashlib.blake2b(image.tobytes(), digest_size=16).digest()) for image in images]
        found = [MEMO.get(key) if self.memoize else None for key in keys]
        missing = [i for i, boxes in enumerate(found) if boxes is None]
        # skimage's segmentation releases the GIL for part of its work: a thread per core overlaps the rest.
        for i, boxes in zip(missing, _pool().map(lambda i: selective_search(images[i], **settings), missing)):
            found[i] = boxes
            if self.memoize:
                MEMO.put(keys[i], boxes)
        out = np.zeros((len(images), self.max_proposals, 4), np.float32)
        valid = np.zeros((len(images), self.max_proposals), np.float32)
        for i, boxes in enumerate(found):
            out[i, :len(boxes)], valid[i, :len(boxes)] = boxes, 1.0
        return out, valid

    def call(self, images):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(f"SelectiveSearch runs on the TensorFlow backend, not "
                                      f"{keras.backend.backend()}; accepted: KERAS_BACKEND=tensorflow")
        import tensorflow as tf

        boxes, valid = tf.numpy_function(self.propose, [tf.cast(images, tf.float32)], [tf.float32, tf.float32],
                                         stateful=False, name="selective_search")
        batch = images.shape[0]
        boxes.set_shape((batch, self.max_proposals, 4))
        valid.set_shape((batch, self.max_proposals))
        return boxes, valid

    def compute_output_spec(self, images):
        batch = images.shape[0]
        return (keras.KerasTensor((batch, self.max_proposals, 4), "float32"),
                keras.KerasTensor((batch, self.max_proposals), "float32"))

    def get_config(self):
        return {**super().get_config(), "max_proposals": self.max_proposals, "scales": self.scales,
                "sigma": self.sigma, "min_size": self.min_size, "min_side": self.min_side,
                "duplicate_iou": self.duplicate_iou, "memoize": self.memoize}
