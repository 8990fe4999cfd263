"""faces: a seeded procedural face-landmarks dataset (68 points in the iBUG 300-W order), written as COCO keypoints.

Each image holds one face drawn from a 3D template of the 68 300-W landmarks: jaw (0-16), brows (17-26), nose
bridge and tip (27-30), nostrils (31-35), eyes (36-47), outer lips (48-59) and inner lips (60-67). Identity
(face width, jaw length, eye spacing, feature sizes), expression (eye openness, brow raise, smile, open mouth)
and pose (yaw, pitch and roll, projected orthographically, so a turned face is foreshortened) are random, as are
skin, hair and lip colours, the direction of a light gradient, the background and pixel noise. The landmarks are
the vertices the drawing uses (the head's outline is the jaw line itself), so they are exact by construction.

Points follow the subject's side, as COCO names keypoints: "right_eye_outer" is point 36, on the image's left.
`flip_pairs` pairs "left_*" with "right_*" names, so a horizontal flip swaps the 300-W mirror points. With
`landmarks=5` the set keeps the documented subset FIVE (outer eye corners, nose tip, mouth corners).

Layout: see data.synthetic (images/{train,val}/*.png, annotations/instances_{train,val}.json), one category
"face" with its keypoint names and skeleton (the 300-W contour lines).

Examples:
    >>> splits = ensure_faces("/tmp/faces", n=200, size=96)           # doctest: +SKIP
    >>> records = coco(*splits["train"])                              # doctest: +SKIP
    >>> len(records.keypoint_names)                                    # doctest: +SKIP
    68
"""
import numpy as np

from convforge.data import synthetic
from convforge.errors import DataError

DESCRIPTION = "convforge procedural faces"
VERSION = 1  # bump when the drawing changes, so ensure_faces regenerates stale copies
SUPERSAMPLE = 4  # drawn this many times larger, then reduced: anti-aliased edges


def _names():
    """The 68 landmark names in 300-W order, each side named from the subject's point of view."""
    jaw = [f"right_jaw_{i}" for i in range(1, 9)] + ["chin"] + [f"left_jaw_{i}" for i in range(8, 0, -1)]
    brows = [f"right_brow_{i}" for i in range(1, 6)] + [f"left_brow_{i}" for i in range(5, 0, -1)]
    nose = ["nose_bridge_1", "nose_bridge_2", "nose_bridge_3", "nose_tip",
            "right_nostril_2", "right_nostril_1", "nose_base", "left_nostril_1", "left_nostril_2"]
    eyes = ["right_eye_outer", "right_eye_top_outer", "right_eye_top_inner", "right_eye_inner",
            "right_eye_bottom_inner", "right_eye_bottom_outer",
            "left_eye_inner", "left_eye_top_inner", "left_eye_top_outer", "left_eye_outer",
            "left_eye_bottom_outer", "left_eye_bottom_inner"]
    lips = ["right_mouth_corner", "right_upper_lip_2", "right_upper_lip_1", "upper_lip_center", "left_upper_lip_1",
            "left_upper_lip_2", "left_mouth_corner", "left_lower_lip_2", "left_lower_lip_1", "lower_lip_center",
            "right_lower_lip_1", "right_lower_lip_2",
            "right_inner_mouth_corner", "right_inner_upper_lip", "inner_upper_lip_center", "left_inner_upper_lip",
            "left_inner_mouth_corner", "left_inner_lower_lip", "inner_lower_lip_center", "right_inner_lower_lip"]
    return tuple(jaw + brows + nose + eyes + lips)


LANDMARK_NAMES = _names()
# The 5-point subset: outer eye corners, nose tip, mouth corners (300-W indices 36, 45, 30, 48, 54).
FIVE = (36, 45, 30, 48, 54)
# The 300-W contour lines as index runs; the skeleton joins consecutive points of each.
RUNS = ((0, 17), (17, 22), (22, 27), (27, 31), (31, 36), (36, 42, True), (42, 48, True), (48, 60, True),
        (60, 68, True))


def skeleton(indices):
    """COCO skeleton (1-based pairs) of the contour lines among the kept landmarks."""
    position = {index: k + 1 for k, index in enumerate(indices)}
    pairs = []
    for run in RUNS:
        start, stop, closed = run[0], run[1], len(run) > 2
        points = [i for i in range(start, stop) if i in position]
        pairs += [[position[a], position[b]] for a, b in zip(points, points[1:])]
        if closed and len(points) > 2:
            pairs.append([position[points[-1]], position[points[0]]])
    return pairs


def _template(rng):
    """The 68 landmarks of a random identity and expression as (68, 3) face-frame points (x right, y down, z
    toward the camera; the face is about 2 units wide), and the forehead arc that closes the head's outline."""
    width = rng.uniform(0.85, 1.05)  # half the face's width
    length = rng.uniform(1.15, 1.4)  # chin below the eye line
    eye_x, eye_y, eye_w = rng.uniform(0.36, 0.46), rng.uniform(-0.28, -0.16), rng.uniform(0.26, 0.34)
    openness = rng.choice([rng.uniform(0.02, 0.15), rng.uniform(0.35, 1.0)], p=[0.15, 0.85])
    brow = rng.uniform(-0.05, 0.12)
    smile, mouth_open = rng.uniform(-0.08, 0.12), rng.choice([0.0, rng.uniform(0.04, 0.3)], p=[0.5, 0.5])
    mouth_y, mouth_w = rng.uniform(0.5, 0.68), rng.uniform(0.28, 0.42)
    nose_y = rng.uniform(0.22, 0.36)

    t = np.linspace(-0.12, np.pi + 0.12, 17)
    jaw = np.stack([-width * np.cos(t), eye_y + 0.05 + (length - eye_y) * np.sin(t)], 1)
    jaw[:, 1] = np.maximum(jaw[:, 1], eye_y - 0.05)
    brow_x = np.linspace(0.78, 0.12, 5) * (eye_x + eye_w) / 0.74
    brow_y = eye_y - 0.22 - brow - 0.08 * np.sin(np.linspace(0.2, np.pi - 0.4, 5))
    right_brow = np.stack([-brow_x, brow_y], 1)
    left_brow = np.stack([brow_x[::-1], brow_y[::-1]], 1)
    bridge = np.stack([np.zeros(4), np.linspace(eye_y, nose_y - 0.04, 4)], 1)
    nostril_x = np.array([-0.2, -0.1, 0.0, 0.1, 0.2]) * rng.uniform(0.8, 1.2)
    nostrils = np.stack([nostril_x, nose_y + np.array([0.0, 0.03, 0.05, 0.03, 0.0])], 1)
    half_h = 0.1 * openness
    # Eye outlines: outer corner, two upper, inner corner, two lower (right eye); the left eye mirrors it.
    ex = np.array([-eye_w, -eye_w / 3, eye_w / 3, eye_w]) / 2
    right_eye = np.stack([-eye_x + ex[[0, 1, 2, 3, 2, 1]],
                          eye_y + np.array([0, -half_h, -half_h, 0.01, half_h * 0.8, half_h * 0.8])], 1)
    left_eye = np.stack([eye_x - ex[[3, 2, 1, 0, 1, 2]],
                         eye_y + np.array([0.01, -half_h, -half_h, 0, half_h * 0.8, half_h * 0.8])], 1)
    mx = mouth_w * np.array([-1, -0.6, -0.22, 0, 0.22, 0.6, 1])
    upper = mouth_y - np.array([smile, 0.05 + smile / 3, 0.07, 0.05, 0.07, 0.05 + smile / 3, smile])
    lower = mouth_y + mouth_open + np.array([0.06 - smile / 3, 0.09, 0.1, 0.09, 0.06 - smile / 3])
    outer = np.concatenate([np.stack([mx, upper], 1), np.stack([mx[[5, 4, 3, 2, 1]], lower], 1)])
    inner_x = 0.8 * mouth_w * np.array([-1, -0.45, 0, 0.45, 1, 0.45, 0, -0.45])
    inner_y = mouth_y - np.array([smile * 0.8, 0.015, 0.02, 0.015, smile * 0.8, 0, 0, 0])
    inner_y[5:] += mouth_open
    inner = np.stack([inner_x, inner_y], 1)
    points = np.concatenate([jaw, right_brow, left_brow, bridge, nostrils, right_eye, left_eye, outer, inner])
    points += rng.normal(0, 0.008, points.shape)
    # Depth: on an ellipsoid of the face's size, the nose standing out of it.
    rim = np.clip(1 - (points[:, 0] / (width * 1.05)) ** 2 - ((points[:, 1] - 0.15) / (length * 1.15)) ** 2, 0, 1)
    z = 0.85 * np.sqrt(rim)
    z[27:31] += np.linspace(0.08, 0.4, 4)
    z[31:36] += np.array([0.12, 0.2, 0.25, 0.2, 0.12])
    landmarks = np.concatenate([points, z[:, None]], 1)
    arc_t = np.linspace(0.0, np.pi, 15)[1:-1]
    top = eye_y - rng.uniform(0.85, 1.05)
    forehead = np.stack([width * 1.02 * np.cos(arc_t), eye_y + (top - eye_y) * np.sin(arc_t),
                         0.2 * np.sin(arc_t)], 1)
    return landmarks, forehead


def _rotation(yaw, pitch, roll):
    """The 3x3 rotation of a head turned by yaw (about y), nodded by pitch (about x), tilted by roll (about z)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
                 [255, 205, 180], [120, 72, 40]], np.float32)


def _draw_face(rng, size, indices):
    """One image (uint8 size x size x 3) and its face annotation (COCO keypoints over the kept indices)."""
    from PIL import Image, ImageDraw

    landmarks, forehead = _template(rng)
    rotation = _rotation(np.deg2rad(rng.uniform(-35, 35)), np.deg2rad(rng.uniform(-18, 18)),
                         np.deg2rad(rng.uniform(-25, 25)))
    centre = np.array([0.0, 0.1, 0.0])
    projected = ((landmarks - centre) @ rotation.T)[:, :2]
    outline_3d = np.concatenate([landmarks[:17], forehead])  # jaw left to right, forehead right to left
    outline = ((outline_3d - centre) @ rotation.T)[:, :2]
    # Scale and place the head so that its outline fits with a margin of 3% of the image.
    low, high = outline.min(0), outline.max(0)
    scale = size * rng.uniform(0.6, 0.88) / max(high - low)
    margin = 0.03 * size
    room_low = margin - low * scale
    room_high = size - margin - high * scale
    offset = rng.uniform(room_low, np.maximum(room_high, room_low))
    points, outline = projected * scale + offset, outline * scale + offset

    s = SUPERSAMPLE
    canvas = Image.fromarray(np.clip(synthetic.background(rng, size * s), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    big = lambda p: [tuple(v) for v in (np.asarray(p) * s)]  # noqa: E731
    skin = SKIN[rng.integers(len(SKIN))] * rng.uniform(0.85, 1.1)
    colour = lambda c: tuple(int(v) for v in np.clip(c, 0, 255))  # noqa: E731
    if rng.random() < 0.7:  # hair: the forehead arc, grown outward
        hair_colour = rng.uniform(0, 120, 3) if rng.random() < 0.8 else rng.uniform(120, 255, 3)
        grow = (outline[17:] - points[28]) * rng.uniform(1.08, 1.2) + points[28]
        draw.polygon(big(np.concatenate([outline[15:17], grow, outline[:2]])), fill=colour(hair_colour))
    draw.polygon(big(outline), fill=colour(skin))
    brow_colour = colour(rng.uniform(10, 90, 3))
    width = max(1, int(round(0.035 * scale * s)))
    for run in ((17, 22), (22, 27)):
        draw.line(big(points[run[0]:run[1]]), fill=brow_colour, width=width, joint="curve")
    for eye in (points[36:42], points[42:48]):
        draw.polygon(big(eye), fill=colour(rng.uniform(215, 250, 3)), outline=colour(skin * 0.45))
        centre_eye = eye.mean(0)
        radius = 0.3 * np.linalg.norm(eye[3] - eye[0]) * s
        height = np.linalg.norm(eye[[1, 2]].mean(0) - eye[[5, 4]].mean(0)) * s
        if height > 1.5 * s:
            r = min(radius, height / 2)
            cx, cy = centre_eye * s
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour(rng.uniform(20, 110, 3)))
    line = max(1, int(round(0.02 * scale * s)))
    draw.line(big(points[27:31]), fill=colour(skin * 0.75), width=line)
    draw.line(big(points[31:36]), fill=colour(skin * 0.55), width=line, joint="curve")
    lips = colour(skin * np.array([1.0, 0.6, 0.6]) * rng.uniform(0.7, 1.0))
    draw.polygon(big(points[48:60]), fill=lips)
    if np.linalg.norm(points[62] - points[66]) > 0.01 * size:
        draw.polygon(big(points[60:68]), fill=colour(rng.uniform(20, 70, 3)))
    image = np.asarray(canvas.resize((size, size), Image.BOX), np.float32)
    # Light from one side: a gradient over the head's pixels, then sensor noise over everything.
    mask = Image.new("L", (size, size))
    ImageDraw.Draw(mask).polygon([tuple(v) for v in outline], fill=1)
    head = np.asarray(mask, bool)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    light = 1 + rng.uniform(0.1, 0.4) * (xx * np.cos(angle) + yy * np.sin(angle))
    image[head] *= light[head, None]
    image += rng.normal(0, rng.uniform(2, 8), image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    kept = points[list(indices)]
    x0, y0 = np.minimum(outline.min(0), kept.min(0))
    x1, y1 = np.maximum(outline.max(0), kept.max(0))
    keypoints = []
    for x, y in kept:
        keypoints += [round(float(x), 2), round(float(y), 2), 2]
    annotation = {"category_id": 1, "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                  "area": float(head.sum()), "iscrowd": 0,
                  "segmentation": [[round(float(v), 2) for v in outline.reshape(-1)]],
                  "keypoints": keypoints, "num_keypoints": len(indices)}
    return image, [annotation]


def _indices(landmarks):
    """The 300-W indices a landmark count keeps: 68 (all) or 5 (FIVE)."""
    return tuple(range(68)) if landmarks == 68 else FIVE


def _params(n=2000, size=96, seed=0, val_fraction=0.2, landmarks=68):
    """Validate the generator's arguments and return them as the JSON-ready dict stored in `info`."""
    synthetic.check_common("faces", n, size, val_fraction, min_size=32)
    if landmarks not in (68, 5):
        raise DataError(f"faces landmarks={landmarks!r} is not accepted; accepted: 68 (the 300-W points) or 5 "
                        f"(outer eye corners, nose tip, mouth corners)")
    return {"n": n, "size": size, "seed": int(seed), "val_fraction": float(val_fraction),
            "landmarks": int(landmarks), "version": VERSION}


def _draw_split(params, split, n):
    """The faces of one split."""
    indices = _indices(params["landmarks"])
    for k in range(n):
        rng = np.random.default_rng([params["seed"], synthetic.SPLITS.index(split), k, 68])
        yield _draw_face(rng, params["size"], indices)


def _categories(params):
    """The one category, "face", with its landmark names and contour skeleton."""
    indices = _indices(params["landmarks"])
    return [{"id": 1, "name": "face", "supercategory": "face",
             "keypoints": [LANDMARK_NAMES[i] for i in indices], "skeleton": skeleton(indices)}]


GENERATOR = synthetic.Synthetic("faces", DESCRIPTION, _params, _draw_split, _categories)


def generate_faces(out_dir, **kwargs):
    """Write a faces dataset to out_dir (n images split into train/val, size px, 68 or 5 landmarks; seeded,
    atomic, see data.synthetic); return its splits."""
    return synthetic.generate(GENERATOR, out_dir, **kwargs)


def ensure_faces(out_dir, **kwargs):
    """The splits of the faces dataset in out_dir, generated unless it exists with these arguments."""
    return synthetic.ensure(GENERATOR, out_dir, **kwargs)


def load_faces(split="train", out_dir=None, strict=False, **kwargs):
    """The faces source: ensure the dataset exists (arguments as generate_faces), then load it with coco()."""
    return synthetic.load(GENERATOR, split, out_dir, strict, **kwargs)
