"""Meshes of voxel grids: marching cubes (scikit-image), Wavefront OBJ files, and which points a mesh encloses.

Grids are (x, y, z) over the cube [-1, 1]^3 with voxel centres at (k + 0.5) * 2 / S - 1 (data.solids); meshes
are in the same coordinates, so a mesh lies over the voxels it was made from.
"""
import numpy as np


def grid_mesh(occupancy, level=0.5):
    """(vertices (V, 3) float, faces (F, 3) int, normals outward) of the iso-surface of an (x, y, z) grid at
    `level`; the grid is padded with empty voxels first, so the surface is closed. Empty results for a grid with
    nothing above it."""
    from skimage.measure import marching_cubes

    grid = np.pad(np.asarray(occupancy, np.float32), 1)
    if not (grid.max() > level > grid.min()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    size = occupancy.shape[0]
    vertices, faces, _, _ = marching_cubes(grid, level=level)
    # Padded index i is voxel i - 1, whose centre lies at (i - 1 + 0.5) * 2 / S - 1. scikit-image winds faces
    # towards the low values; reversed, they are counter-clockwise seen from outside, as OBJ readers expect.
    return ((vertices - 0.5) * (2.0 / size) - 1.0).astype(np.float32), faces[:, ::-1].astype(np.int64)


def write_obj(path, vertices, faces):
    """Write a triangle mesh as a Wavefront OBJ file (1-based face indices)."""
    lines = [f"# convforge voxel mesh: {len(vertices)} vertices, {len(faces)} faces"]
    lines += [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    from convforge.atomic import replacing

    with replacing(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_obj(path):
    """(vertices (V, 3), faces (F, 3) 0-based) of an OBJ file's `v` and triangular `f` lines."""
    vertices, faces = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "v":
                vertices.append([float(v) for v in parts[1:4]])
            elif parts and parts[0] == "f":
                faces.append([int(v.split("/")[0]) - 1 for v in parts[1:4]])
    return np.asarray(vertices, np.float64).reshape(-1, 3), np.asarray(faces, np.int64).reshape(-1, 3)


def winding_numbers(vertices, faces, points):
    """The generalized winding number of a closed triangle mesh at each point (Jacobson et al. 2013): about 1
    inside, 0 outside (the solid angle of every triangle, summed, over 4 pi)."""
    a, b, c = (vertices[faces[:, i]][None] - np.asarray(points, np.float64)[:, None] for i in range(3))
    la, lb, lc = (np.linalg.norm(v, axis=-1) for v in (a, b, c))
    det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
    div = (la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc + np.einsum("pfi,pfi->pf", b, c) * la
           + np.einsum("pfi,pfi->pf", c, a) * lb)
    return (2 * np.arctan2(det, div)).sum(-1) / (4 * np.pi)
