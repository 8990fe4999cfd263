"""Procedural datasets written as real dataset files: the one writer behind shapes, faces and solids.

A generator is a `Synthetic`: its description (the tag stored in the JSON's info, by which an existing copy
is recognized), a function validating its arguments into a JSON-ready params dict, one drawing images and
their annotations for a split, and its COCO categories. `generate` writes train and val into a temporary
folder and renames it into place, so a crash never leaves a half-written dataset; `ensure` reuses a copy
written with the same params. Backgrounds (smooth colour noise, gradients, stripes) are shared, so every set
makes a model look at its objects, not at a flat colour.

Layouts (`Synthetic.layout`)::

    coco:   out_dir/images/train/000000.png ...         out_dir/annotations/instances_train.json
            out_dir/images/val/000000.png ...           out_dir/annotations/instances_val.json
    binvox: out_dir/train/<class>/000000.png + 000000.binvox ...   out_dir/train/info.json (and val/)
"""
import concurrent.futures
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import uuid
import warnings
from typing import Callable, NamedTuple

import numpy as np

from convforge.errors import DataError, close_matches

SPLITS = ("train", "val")


class CocoSplit(NamedTuple):
    """The two paths coco() takes for one split."""

    annotations: str
    images_root: str


@dataclasses.dataclass(frozen=True)
class Synthetic:
    """One procedural dataset: how its arguments validate, how a split is drawn, what its categories are."""

    name: str  # "shapes": the cache folder prefix and the word error messages use
    description: str  # stored in the JSON's info; an existing folder holds this set when it matches
    params: Callable  # **arguments (each with its default) -> JSON-ready params dict; DataError on bad ones
    # (params, split, n) -> iterable of n (uint8 image, [annotation dicts without ids]) for the COCO layout,
    # or of n (uint8 image, (class name, voxel grid)) for the binvox layout.
    draw_split: Callable
    categories: Callable  # params -> COCO categories list (COCO layout only)
    # "coco": images/<split>/*.png and annotations/instances_<split>.json; "binvox": <split>/<class>/k.png with
    # k.binvox beside it and <split>/info.json (read back by data.sources.binvox).
    layout: str = "coco"

    @property
    def defaults(self):
        """Every argument of the generator with its default."""
        return {k: p.default for k, p in inspect.signature(self.params).parameters.items()}


def split_size(params, split):
    """The number of images of `split` (val takes round(n * val_fraction))."""
    n_val = int(round(params["n"] * params["val_fraction"]))
    return params["n"] - n_val if split == "train" else n_val


def check_common(what, n, size, val_fraction, min_size=16):
    """Refuse a bad image count, image size or val fraction of generator `what` in one line."""
    if not (isinstance(n, int) and n >= 1 and isinstance(size, int) and size >= min_size):
        raise DataError(f"{what} n={n!r} must be a positive integer and size={size!r} an integer >= {min_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"{what} val_fraction={val_fraction} must lie in [0, 1)")


def _write_binvox_split(gen, folder, split, params, first_id):
    """Draw and save one split as images with their .binvox grids, by class folder; return the next free id."""
    from PIL import Image

    from convforge.data.sources.binvox import write_binvox

    n = split_size(params, split)
    saves = []
    with concurrent.futures.ThreadPoolExecutor(2) as writer:
        for k, (pixels, (name, grid)) in enumerate(gen.draw_split(params, split, n)):
            stem = os.path.join(folder, split, name, f"{k:06d}")
            os.makedirs(os.path.dirname(stem), exist_ok=True)
            saves.append(writer.submit(Image.fromarray(pixels).save, stem + ".png", compress_level=1))
            saves.append(writer.submit(write_binvox, stem + ".binvox", grid))
        for save in saves:
            save.result()
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    info = {"description": gen.description, "version": str(params.get("version", 1)), "split": split,
            "params": params}
    with open(os.path.join(folder, split, "info.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"info": info}))
    return first_id + n


def _write_split(gen, folder, split, params, first_id):
    """Draw and save one split's images and its COCO JSON inside `folder`; return the next free image id."""
    from PIL import Image

    n = split_size(params, split)
    image_dir = os.path.join(folder, "images", split)
    os.makedirs(image_dir)
    images, annotations, saves = [], [], []
    # PNG encoding and file writes release the GIL, so a writer thread overlaps them with the drawing.
    with concurrent.futures.ThreadPoolExecutor(2) as writer:
        for k, (pixels, objects) in enumerate(gen.draw_split(params, split, n)):
            name = f"{k:06d}.png"
            # Fast zlib level: noisy textures barely compress anyway, and encoding dominates the run time.
            saves.append(writer.submit(Image.fromarray(pixels).save, os.path.join(image_dir, name),
                                       compress_level=1))
            image_id = first_id + k
            images.append({"id": image_id, "file_name": name, "width": int(pixels.shape[1]),
                           "height": int(pixels.shape[0])})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
        for save in saves:
            save.result()
    coco = {"info": {"description": gen.description, "version": str(params.get("version", 1)), "split": split,
                     "params": params},
            "licenses": [], "images": images, "annotations": annotations, "categories": gen.categories(params)}
    with open(os.path.join(folder, "annotations", f"instances_{split}.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(coco))  # dumps uses the C encoder; dump streams through the pure-Python one
    return first_id + n


def splits(out_dir, layout="coco"):
    """The CocoSplit of each split under out_dir (the binvox layout: each split's folder)."""
    if layout == "binvox":
        return {s: os.path.join(out_dir, s) for s in SPLITS}
    return {s: CocoSplit(os.path.join(out_dir, "annotations", f"instances_{s}.json"),
                         os.path.join(out_dir, "images", s)) for s in SPLITS}


def _split_files(gen, out_dir, split):
    """(the JSON holding a split's info, the number of its images on disk, or None when its folder is missing)."""
    if gen.layout == "binvox":
        folder = os.path.join(out_dir, split)
        if not os.path.isdir(folder):
            return os.path.join(folder, "info.json"), None
        count = sum(f.endswith(".png") for _, _, files in os.walk(folder) for f in files)
        return os.path.join(folder, "info.json"), count
    annotations, images_root = splits(out_dir)[split]
    return annotations, len(os.listdir(images_root)) if os.path.isdir(images_root) else None


def stored_params(gen, out_dir):
    """The params recorded in an existing dataset of `gen`, or None when out_dir holds no complete one."""
    found = None
    for split in SPLITS:
        info_file, count = _split_files(gen, out_dir, split)
        try:
            with open(info_file, encoding="utf-8") as f:
                info = json.load(f).get("info", {})
        except (OSError, ValueError):
            return None
        if info.get("description") != gen.description or (found is not None and info.get("params") != found):
            return None
        found = info.get("params")
        if not isinstance(found, dict) or not {"n", "val_fraction"} <= set(found):
            return None
        if count != split_size(found, split):
            return None
    return found


def _arguments(gen, kwargs):
    """The generator's full argument dict, refusing names it does not take."""
    unknown = set(kwargs) - set(gen.defaults)
    if unknown:
        name = sorted(unknown)[0]
        raise DataError(f"the {gen.name} generator got an unknown argument {name!r}"
                        f"{close_matches(name, gen.defaults)}; accepted: {', '.join(gen.defaults)}")
    return {**gen.defaults, **kwargs}


def generate(gen, out_dir, **kwargs):
    """Write `gen`'s dataset to out_dir (train and val, COCO files); return its splits. An existing out_dir is
    replaced only when it holds an earlier dataset of the same generator; any other folder raises DataError."""
    params = gen.params(**_arguments(gen, kwargs))
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    if os.path.exists(out_dir) and os.listdir(out_dir) and stored_params(gen, out_dir) is None:
        raise DataError(f"{out_dir} exists and is not a {gen.name} dataset; pass an empty or new folder")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{tag}")
    old = os.path.join(parent, f".{os.path.basename(out_dir)}.old-{tag}")
    try:
        os.makedirs(os.path.join(temp, "annotations") if gen.layout == "coco" else temp)
        write = _write_split if gen.layout == "coco" else _write_binvox_split
        next_id = 1
        with warnings.catch_warnings():
            # pycocotools 2.0 decodes through an __array__ without numpy 2's copy keyword; harmless here.
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            for split in SPLITS:
                next_id = write(gen, temp, split, params, next_id)
        if os.path.exists(out_dir):
            os.rename(out_dir, old)
        os.rename(temp, out_dir)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return splits(out_dir, gen.layout)


def ensure(gen, out_dir, **kwargs):
    """Return the splits of `gen`'s dataset in out_dir, generating it unless it exists with these arguments."""
    params = gen.params(**_arguments(gen, kwargs))
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    if stored_params(gen, out_dir) == params:
        return splits(out_dir, gen.layout)
    try:
        return generate(gen, out_dir, **kwargs)
    except OSError:
        # Another process may have renamed the same dataset into place first; theirs is as good as ours.
        if stored_params(gen, out_dir) == params:
            return splits(out_dir, gen.layout)
        raise


def default_dir(gen, **kwargs):
    """The cache folder for `gen`'s dataset with these arguments: $CONVFORGE_DATA or ~/.cache/convforge."""
    key = hashlib.sha1(json.dumps(kwargs, sort_keys=True, default=list).encode()).hexdigest()[:10]
    base = os.environ.get("CONVFORGE_DATA", os.path.join("~", ".cache", "convforge"))
    return os.path.join(os.path.expanduser(base), f"{gen.name}-{key}")


def load(gen, split="train", out_dir=None, strict=False, **kwargs):
    """A generator's source: ensure its dataset exists, then load `split` with coco() (or binvox())."""
    if split not in SPLITS:
        raise DataError(f"{gen.name} split {split!r} is not one of {', '.join(SPLITS)}{close_matches(split, SPLITS)}")
    out_dir = out_dir or default_dir(gen, **kwargs)
    found = ensure(gen, out_dir, **kwargs)[split]
    if gen.layout == "binvox":
        from convforge.data.sources.binvox import binvox

        return binvox(found, strict=strict)
    from convforge.data.sources.coco import coco

    return coco(*found, strict=strict)


# ---- backgrounds ---------------------------------------------------------------------------------------------

def _smooth_noise(rng, size):
    """A smooth random colour field: a 4x4 grid of colours upsampled bilinearly."""
    from PIL import Image

    grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), np.float32)


def _gradient(rng, size):
    """A linear blend between two random colours along a random direction."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    c0, c1 = rng.uniform(0, 255, (2, 3))
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)


def _stripes(rng, size):
    """Hard stripes of two random colours with a random period and direction."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, max(8, size / 4))
    on = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period) > 0
    c0, c1 = rng.uniform(0, 255, (2, 3))
    return np.where(on[..., None], c0, c1).astype(np.float32)


BACKGROUNDS = {"noise": _smooth_noise, "gradient": _gradient, "stripes": _stripes}


def background(rng, size):
    """A random background (size, size, 3) float32 in 0..255: one of BACKGROUNDS."""
    return BACKGROUNDS[list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]](rng, size)
