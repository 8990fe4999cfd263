"""binvox: voxel occupancy grids (.binvox, the format ShapeNet ships) paired with images of the same name.

A .binvox file is a text header (`#binvox 1`, `dim D D D`, `translate`, `scale`, `data`) and then run-length
pairs of bytes (value, count) over the voxels with y running fastest, then z, then x. In memory a grid is
(x, y, z), y up, as binvox-rw reads it: `read_binvox` and `write_binvox` convert.

`binvox(path)` pairs every image under `path` (searched recursively) with the .binvox file of the same stem
beside it; the first-level sub-folders are the classes (ShapeNet's synsets, the solids set's primitives), and
images directly in `path` belong to one class, "object".
"""
import os

import numpy as np

from convforge.data.records import Skips, images_with_sidecars, inspect_images, require_path
from convforge.errors import DataError


def write_binvox(path, occupancy, translate=(0.0, 0.0, 0.0), scale=1.0):
    """Write an (x, y, z) boolean grid of equal sides as a .binvox file."""
    grid = np.asarray(occupancy, bool)
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        raise DataError(f"a binvox grid must be a cube (D, D, D); got shape {grid.shape}")
    flat = np.transpose(grid, (0, 2, 1)).reshape(-1).astype(np.uint8)  # x slowest, then z, y fastest
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(flat)]]))
    pairs = []
    for start, length in zip(starts, lengths):
        while length > 0:  # a run is one byte: longer ones are split
            step = min(int(length), 255)
            pairs += [int(flat[start]), step]
            length -= step
    d = grid.shape[0]
    header = (f"#binvox 1\ndim {d} {d} {d}\ntranslate {translate[0]} {translate[1]} {translate[2]}\n"
              f"scale {scale}\ndata\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii") + bytes(pairs))


def read_binvox(path):
    """Read a .binvox file into an (x, y, z) boolean grid; raise ValueError naming what is wrong."""
    with open(path, "rb") as f:
        if not f.readline().startswith(b"#binvox"):
            raise ValueError("no '#binvox' header")
        dims = None
        while True:
            line = f.readline()
            if not line:
                raise ValueError("no 'data' line")
            words = line.strip().split()
            if words and words[0] == b"dim":
                dims = [int(v) for v in words[1:4]]
            if words == [b"data"]:
                break
        if dims is None or len(dims) != 3:
            raise ValueError("no 'dim D D D' line")
        raw = np.frombuffer(f.read(), np.uint8)
    if len(raw) % 2:
        raise ValueError("odd number of run-length bytes")
    values, counts = raw[0::2], raw[1::2].astype(np.int64)
    total = int(np.prod(dims))
    if counts.sum() != total:
        raise ValueError(f"runs cover {int(counts.sum())} voxels, not {dims[0]}x{dims[1]}x{dims[2]} = {total}")
    flat = np.repeat(values.astype(bool), counts)
    return np.transpose(flat.reshape(dims[0], dims[2], dims[1]), (0, 2, 1))


def resample(grid, size):
    """An (x, y, z) grid at size^3: any-pooled when its side is a multiple of size (a coarse voxel is occupied when
    any fine one is, as 3D-R2N2's 32^3 grids come from finer ones), else nearest-neighbour."""
    grid = np.asarray(grid, bool)
    side = grid.shape[0]
    if side == size:
        return grid
    if side % size == 0:
        f = side // size
        return grid.reshape(size, f, size, f, size, f).any(axis=(1, 3, 5))
    index = (np.arange(size) * side // size).clip(0, side - 1)
    return grid[np.ix_(index, index, index)]


def _check_header(path):
    """Raise ValueError unless the file starts like a .binvox file (the grid itself is read when parsed)."""
    with open(path, "rb") as f:
        if not f.readline().startswith(b"#binvox"):
            raise ValueError("no '#binvox' header")


def binvox(path, strict=False):
    """Load a folder of images each with its .binvox grid beside it (same stem), classes from sub-folders.

    Images without a .binvox file, unreadable images and malformed .binvox files are skipped with one warning,
    or raise DataError when `strict`.

    Examples:
        >>> records = binvox("data/solids/train")          # doctest: +SKIP
        >>> records[0]["voxels"]                            # doctest: +SKIP
        'data/solids/train/cube/000000.binvox'
    """
    source = f"binvox({path})"
    root = require_path(path, "folder", source)
    if not os.path.isdir(root):
        raise DataError(f"{root} of {source} is a file; pass the folder holding images and their .binvox files")
    skips = Skips(source, strict)
    candidates = []
    for image, grid, _ in images_with_sidecars(root, ".binvox", _check_header, skips):
        relative = os.path.relpath(image, root).split(os.sep)
        candidates.append((image, grid, relative[0] if len(relative) > 1 else "object"))
    class_names = sorted({c for _, _, c in candidates})
    records = []
    for (image, grid, name), size in zip(candidates, inspect_images(p for p, _, _ in candidates)):
        if isinstance(size, str):
            skips.add(image, size)
            continue
        records.append({"image_path": image, "image_id": len(records) + 1, "width": size[0], "height": size[1],
                        "label": class_names.index(name), "objects": [], "voxels": grid})
    return skips.finish(records, class_names)
