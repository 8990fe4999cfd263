"""solids: a seeded procedural 3D-shape dataset: an image of one solid and its voxel occupancy, rendered in numpy.

Each example is one primitive (cube, sphere, cylinder, cone, torus) or a union of two, at a random rotation,
scale and position inside the unit cube [-1, 1]^3, drawn by sphere tracing its signed distance function with an
orthographic camera looking down -z (no GPU), Lambert-shaded under a random light and colour over one of the
shared backgrounds, and its occupancy sampled at the centres of an S^3 grid over the same cube (the voxel frame
is the camera's, y up: what the image shows fixes the grid). Written as images with .binvox grids beside them,
one folder per primitive (data.synthetic's binvox layout), read back by data.sources.binvox.

Examples:
    >>> splits = ensure_solids("/tmp/solids", n=200, size=64, voxels=32)   # doctest: +SKIP
    >>> records = binvox(splits["train"])                                  # doctest: +SKIP
"""
import numpy as np

from convforge.data import synthetic
from convforge.errors import DataError

DESCRIPTION = "convforge procedural solids"
VERSION = 1
KINDS = ("cube", "sphere", "cylinder", "cone", "torus", "union")
PRIMITIVES = KINDS[:-1]


# Signed distances (negative inside) in an object frame where each primitive fits the unit ball.
def _box(q, half):
    d = np.abs(q) - half
    return np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(-1), 0)


def _sphere(q, radius):
    return np.linalg.norm(q, axis=-1) - radius


def _cylinder(q, radius, half_height):
    d = np.stack([np.linalg.norm(q[..., [0, 2]], axis=-1) - radius, np.abs(q[..., 1]) - half_height], -1)
    return np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(-1), 0)


def _cone(q, radius, half_height):
    # The side's distance, scaled by the slope's cosine, and the slab's: a lower bound, so tracing stays safe.
    slope = radius / (2 * half_height)
    side = (np.linalg.norm(q[..., [0, 2]], axis=-1) - slope * (half_height - q[..., 1])) / np.sqrt(1 + slope ** 2)
    return np.maximum(side, np.abs(q[..., 1]) - half_height)


def _torus(q, major, minor):
    ring = np.linalg.norm(q[..., [0, 2]], axis=-1) - major
    return np.sqrt(ring ** 2 + q[..., 1] ** 2) - minor


def _primitive(rng, kind):
    """A random primitive of `kind` as sdf(q) over object-frame points (..., 3)."""
    if kind == "cube":
        half = rng.uniform(0.35, 0.55, 3)
        return lambda q: _box(q, half)
    if kind == "sphere":
        radius = rng.uniform(0.75, 1.0)
        return lambda q: _sphere(q, radius)
    if kind == "cylinder":
        radius, half = rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.75)
        return lambda q: _cylinder(q, radius, half)
    if kind == "cone":
        radius, half = rng.uniform(0.45, 0.75), rng.uniform(0.45, 0.65)
        return lambda q: _cone(q, radius, half)
    major = rng.uniform(0.5, 0.68)
    minor = rng.uniform(0.17, min(0.3, 1.0 - major))
    return lambda q: _torus(q, major, minor)


def _rotation(rng):
    """A uniformly random 3D rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _placed(rng, kind, scale):
    """sdf(p) over world points of a `kind` solid (a union: two primitives) rotated, scaled and moved so that
    it stays inside the cube [-0.95, 0.95]^3."""
    if kind == "union":
        first, second = rng.choice(len(PRIMITIVES), 2)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        parts = [_placed_part(rng, PRIMITIVES[first], scale * 0.6, direction * scale * 0.38),
                 _placed_part(rng, PRIMITIVES[second], scale * 0.6, -direction * scale * 0.38)]
        return lambda p: np.minimum(parts[0](p), parts[1](p))
    return _placed_part(rng, kind, scale, np.zeros(3))


def _placed_part(rng, kind, scale, offset):
    """One primitive rotated, scaled by `scale` and centred at `offset`, as a world-frame sdf."""
    sdf, rotation = _primitive(rng, kind), _rotation(rng)
    return lambda p: scale * sdf(((p - offset) @ rotation) / scale)


def _trace(sdf, size, steps=64):
    """Sphere-trace an orthographic view down -z: (hit mask (size, size), hit points (size, size, 3))."""
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(coords, -coords)  # image rows go down, world y goes up
    origin = np.stack([x, y, np.full_like(x, 1.5)], -1)
    t = np.zeros(x.shape)
    hit = np.zeros(x.shape, bool)
    for _ in range(steps):
        points = origin - t[..., None] * np.array([0.0, 0.0, 1.0])
        d = sdf(points)
        hit |= d < 2e-3
        t = np.where(hit, t, t + np.maximum(0.8 * d, 2e-3))
        if np.all(hit | (t > 3.0)):
            break
    return hit & (t <= 3.0), origin - t[..., None] * np.array([0.0, 0.0, 1.0])


def _normals(sdf, points, eps=1e-3):
    """Unit surface normals from the sdf's central differences."""
    grad = np.stack([sdf(points + e) - sdf(points - e) for e in np.eye(3) * eps], -1)
    return grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-9)


def occupancy(sdf, size):
    """The (x, y, z) boolean grid of an sdf sampled at the centres of size^3 voxels over [-1, 1]^3."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)
    return sdf(grid) <= 0


def _draw_solid(rng, size, voxels, kind):
    """One image (uint8 size x size x 3) of a `kind` solid and its occupancy grid."""
    sdf = _placed(rng, kind, rng.uniform(0.6, 0.9))
    # Render at twice the size and reduce: anti-aliased edges.
    hit, points = _trace(sdf, 2 * size)
    image = synthetic.background(rng, 2 * size)
    light = rng.normal(size=3) + np.array([0.0, 0.0, 1.5])
    light /= np.linalg.norm(light)
    colour = rng.uniform(60, 255, 3)
    normals = _normals(sdf, points[hit])
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0, 1)
    image[hit] = colour * shade[:, None]
    image = image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    image += rng.normal(0, 4, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), occupancy(sdf, voxels)


def _params(n=2000, size=64, seed=0, val_fraction=0.2, voxels=32):
    """Validate the generator's arguments and return them as the JSON-ready dict stored in `info`."""
    synthetic.check_common("solids", n, size, val_fraction)
    if not (isinstance(voxels, int) and 8 <= voxels <= 128):
        raise DataError(f"solids voxels={voxels!r} is not accepted; accepted: an integer side from 8 to 128 (32 is "
                        f"3D-R2N2's)")
    return {"n": n, "size": size, "seed": int(seed), "val_fraction": float(val_fraction), "voxels": voxels,
            "version": VERSION}


def _draw_split(params, split, n):
    """The solids of one split, kinds balanced by a shuffled, evenly repeated list."""
    split_key = synthetic.SPLITS.index(split)
    kinds = np.random.default_rng([params["seed"], split_key, 3]).permutation(np.arange(n) % len(KINDS))
    for k in range(n):
        rng = np.random.default_rng([params["seed"], split_key, k, 3])
        kind = KINDS[int(kinds[k])]
        pixels, grid = _draw_solid(rng, params["size"], params["voxels"], kind)
        yield pixels, (kind, grid)


GENERATOR = synthetic.Synthetic("solids", DESCRIPTION, _params, _draw_split, categories=None, layout="binvox")


def generate_solids(out_dir, **kwargs):
    """Write a solids dataset to out_dir (n images of size px with voxels^3 grids, split into train/val; seeded,
    atomic, see data.synthetic); return {split: folder}."""
    return synthetic.generate(GENERATOR, out_dir, **kwargs)


def ensure_solids(out_dir, **kwargs):
    """The split folders of the solids dataset in out_dir, generated unless it exists with these arguments."""
    return synthetic.ensure(GENERATOR, out_dir, **kwargs)


def load_solids(split="train", out_dir=None, strict=False, **kwargs):
    """The solids source: ensure the dataset exists (arguments as generate_solids), then load it with binvox()."""
    return synthetic.load(GENERATOR, split, out_dir, strict, **kwargs)
