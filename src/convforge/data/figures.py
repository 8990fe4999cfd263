"""figures: a seeded procedural human-pose dataset (the 17 COCO person keypoints), written as COCO keypoints.

Each image holds one to three people seen from the front, drawn back to front: a torso, limbs as capsules,
a head with eyes, nose and ears. Body proportions, posture (lean, arm and leg angles, bent elbows and knees),
the turn of the body about its vertical axis (which narrows shoulders and hips and moves the face features
round the head), scale, place, clothing, skin and hair colours, the background and pixel noise are random.
The keypoints are the points the drawing is made from, so they are exact by construction; their names are
COCO's and follow the subject's side (the subject faces the camera, so "left_shoulder" is on the image's right).

Visibility follows COCO: 2 visible; 1 labelled but hidden (behind a nearer person, or an eye or ear turned
away from the camera); 0 outside the image (stored as 0, 0, 0). A person's box is its whole silhouette
(hidden parts included) clipped to the image, so a crop from it holds every labelled joint; its segmentation
(RLE) and area are what is visible.

Layout: see data.synthetic (images/{train,val}/*.png, annotations/instances_{train,val}.json), one category
"person" with COCO's keypoint names and skeleton.

Examples:
    >>> splits = ensure_figures("/tmp/figures", n=200, size=128)      # doctest: +SKIP
    >>> records = coco(*splits["train"])                              # doctest: +SKIP
    >>> records.keypoint_names[:3]                                    # doctest: +SKIP
    ['nose', 'left_eye', 'right_eye']
"""
import numpy as np

from convforge.data import synthetic

DESCRIPTION = "convforge procedural figures"
VERSION = 1  # bump when the drawing changes, so ensure_figures regenerates stale copies
SUPERSAMPLE = 2  # drawn this many times larger, then reduced: anti-aliased edges

KEYPOINT_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
# COCO's person skeleton (1-based keypoint pairs), as in its person_keypoints annotations.
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
            [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
PEOPLE = (1, 2, 3)
PEOPLE_P = (0.4, 0.35, 0.25)
# Points on the head (a unit sphere; x to the subject's left, y down, z to the camera before the turn).
FACE = {"nose": (0.0, 0.2, 0.98), "left_eye": (0.38, -0.12, 0.92), "right_eye": (-0.38, -0.12, 0.92),
        "left_ear": (0.98, 0.0, -0.1), "right_ear": (-0.98, 0.0, -0.1)}
SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
                 [120, 72, 40]], np.float32)


def _unit(angle):
    """The direction `angle` radians from straight down (y down), turning towards +x."""
    return np.array([np.sin(angle), np.cos(angle)])


def _pose(rng):
    """One person's 17 keypoints (17, 2) in body units (torso = 1, y down, hips' midpoint at 0), each point's
    self-occlusion (17,) bool, the head's centre and radius and the limbs' half-widths."""
    turn = np.deg2rad(rng.uniform(-55, 55))
    squeeze = np.cos(turn)
    lean = np.deg2rad(rng.normal(0, 7))
    up = -_unit(lean)  # from the hips to the shoulders
    side = np.array([-up[1], up[0]])  # towards the subject's left (the image's right), square to `up`
    shoulders_mid = up * 1.0
    points = {}
    half_shoulders, half_hips = rng.uniform(0.3, 0.4) * squeeze, rng.uniform(0.17, 0.23) * squeeze
    points["left_shoulder"], points["right_shoulder"] = (shoulders_mid + side * half_shoulders,
                                                         shoulders_mid - side * half_shoulders)
    points["left_hip"], points["right_hip"] = side * half_hips, -side * half_hips
    radius = rng.uniform(0.2, 0.26)
    head = shoulders_mid + _unit(lean + np.pi + np.deg2rad(rng.normal(0, 8))) * (0.14 + radius)
    hidden = {}
    for name, (x, y, z) in FACE.items():
        x, z = x * np.cos(turn) + z * np.sin(turn), -x * np.sin(turn) + z * np.cos(turn)
        points[name] = head + radius * np.array([x, y])
        hidden[name] = z < (0.25 if "eye" in name else -0.35)
    for s, sign in (("left", 1.0), ("right", -1.0)):
        # Angles from straight down, positive away from the body; the elbow bends either way, mostly upwards.
        upper = lean + sign * np.deg2rad(rng.uniform(-35, 170))
        fore = upper + sign * np.deg2rad(rng.choice([rng.uniform(-30, 20), rng.uniform(20, 150)], p=[0.4, 0.6]))
        points[f"{s}_elbow"] = points[f"{s}_shoulder"] + _unit(upper) * rng.uniform(0.42, 0.5)
        points[f"{s}_wrist"] = points[f"{s}_elbow"] + _unit(fore) * rng.uniform(0.38, 0.46)
        thigh = sign * np.deg2rad(rng.uniform(-20, 45))
        shin = thigh + np.deg2rad(rng.uniform(-45, 45))
        points[f"{s}_knee"] = points[f"{s}_hip"] + _unit(thigh) * rng.uniform(0.6, 0.7)
        points[f"{s}_ankle"] = points[f"{s}_knee"] + _unit(shin) * rng.uniform(0.55, 0.65)
    keypoints = np.array([points[n] for n in KEYPOINT_NAMES])
    self_hidden = np.array([hidden.get(n, False) for n in KEYPOINT_NAMES])
    widths = {"upper_arm": rng.uniform(0.06, 0.08), "fore_arm": rng.uniform(0.045, 0.06),
              "thigh": rng.uniform(0.08, 0.11), "shin": rng.uniform(0.06, 0.08), "neck": 0.06}
    return keypoints, self_hidden, head, radius, widths


def _draw_person(draw, keypoints, hidden, head, radius, widths, colours, scale):
    """Draw one person (points already in supersampled pixels) onto an ImageDraw (RGB or a mask)."""
    k = {n: tuple(p) for n, p in zip(KEYPOINT_NAMES, keypoints)}

    def limb(a, b, width, fill):
        w = max(1.0, width * scale)
        draw.line([k[a], k[b]] if isinstance(a, str) else [a, b], fill=fill, width=int(round(2 * w)))
        for p in ((k[a], k[b]) if isinstance(a, str) else (a, b)):
            draw.ellipse([p[0] - w, p[1] - w, p[0] + w, p[1] + w], fill=fill)

    for s in ("left", "right"):
        limb(f"{s}_hip", f"{s}_knee", widths["thigh"], colours["pants"])
        limb(f"{s}_knee", f"{s}_ankle", widths["shin"], colours["pants"])
    shoulders = np.array([k["left_shoulder"], k["right_shoulder"]])
    hips = np.array([k["right_hip"], k["left_hip"]])
    out = (shoulders[0] - shoulders[1]) / (np.linalg.norm(shoulders[0] - shoulders[1]) + 1e-9)
    pad = widths["upper_arm"] * scale
    torso = [tuple(shoulders[0] + out * pad * 0.3), tuple(shoulders[1] - out * pad * 0.3),
             tuple(hips[0] - out * pad), tuple(hips[1] + out * pad)]
    draw.polygon(torso, fill=colours["shirt"])
    neck_base = tuple(shoulders.mean(0))
    limb(neck_base, tuple(head), widths["neck"], colours["skin"])
    r = radius * scale
    draw.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], fill=colours["skin"])
    if colours["hair"] is not None:  # the top of the head, as a cap
        draw.chord([head[0] - r, head[1] - r, head[0] + r, head[1] + r], 180, 360, fill=colours["hair"])
    for name in ("left_eye", "right_eye"):
        if not hidden[KEYPOINT_NAMES.index(name)]:
            x, y = k[name]
            e = max(1.0, 0.045 * scale)
            draw.ellipse([x - e, y - e, x + e, y + e], fill=colours["eyes"])
    x, y = k["nose"]
    e = max(1.0, 0.04 * scale)
    draw.ellipse([x - e, y - e, x + e, y + e], fill=colours["nose"])
    for s in ("left", "right"):
        limb(f"{s}_shoulder", f"{s}_elbow", widths["upper_arm"], colours["shirt"])
        limb(f"{s}_elbow", f"{s}_wrist", widths["fore_arm"], colours["skin"])


def _colours(rng, mask=False):
    """A person's clothing, skin and hair colours (all 255 for a mask)."""
    if mask:
        return {"pants": 255, "shirt": 255, "skin": 255, "hair": 255, "eyes": 255, "nose": 255}
    c = lambda v: tuple(int(x) for x in np.clip(v, 0, 255))  # noqa: E731
    skin = SKIN[rng.integers(len(SKIN))] * rng.uniform(0.85, 1.1)
    return {"pants": c(rng.uniform(0, 255, 3)), "shirt": c(rng.uniform(0, 255, 3)), "skin": c(skin),
            "hair": c(rng.uniform(0, 120, 3)) if rng.random() < 0.8 else None,
            "eyes": c(rng.uniform(10, 60, 3)), "nose": c(skin * 0.7)}


def _place(rng, size, people):
    """Random scale (body unit in pixels) and offset per person, the smaller ones (further away) first."""
    heights = np.sort(rng.uniform(0.45, 0.9, people) if people == 1 else rng.uniform(0.35, 0.75, people))
    placed = []
    for h in heights:
        unit = h * size / 3.0  # head top to ankles is about 3 body units, their middle 0.15 above the hips
        centre = rng.uniform([0.12, 0.4], [0.88, 0.6]) * size
        placed.append((unit, centre + np.array([0.0, 0.15 * unit])))
    return placed


def _draw_image(rng, size):
    """One image (uint8 size x size x 3) and its people's annotations (COCO keypoints)."""
    from PIL import Image, ImageDraw

    from convforge.data.instances import encode_rle

    s = SUPERSAMPLE
    canvas = Image.fromarray(np.clip(synthetic.background(rng, size * s), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    people = []
    for unit, offset in _place(rng, size, rng.choice(PEOPLE, p=PEOPLE_P)):
        keypoints, self_hidden, head, radius, widths = _pose(rng)
        # Body units -> pixels: the hips' midpoint goes to `offset`, standing lower than the figure's middle.
        pixels = keypoints * unit + offset
        head_px = head * unit + offset
        silhouette = Image.new("L", (size * s, size * s))
        _draw_person(ImageDraw.Draw(silhouette), pixels * s, self_hidden, head_px * s, radius, widths,
                     _colours(rng, mask=True), unit * s)
        full = np.asarray(silhouette.resize((size, size), Image.BOX)) >= 128
        _draw_person(draw, pixels * s, self_hidden, head_px * s, radius, widths, _colours(rng), unit * s)
        people.append({"points": pixels, "self_hidden": self_hidden, "full": full, "visible": full.copy()})
        for earlier in people[:-1]:  # a nearer person hides what it covers of those drawn before
            earlier["visible"] &= ~full
    image = np.asarray(canvas.resize((size, size), Image.BOX), np.float32)
    image += rng.normal(0, rng.uniform(2, 6), image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    annotations = []
    for person in people:
        keypoints = []
        for (x, y), self_hidden in zip(person["points"], person["self_hidden"]):
            inside = 0 <= x < size and 0 <= y < size
            if not inside:
                keypoints += [0, 0, 0]
                continue
            covered = not person["visible"][int(y), int(x)] and person["full"][int(y), int(x)]
            keypoints += [round(float(x), 2), round(float(y), 2), 1 if self_hidden or covered else 2]
        rows, cols = np.nonzero(person["full"])
        x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
        annotations.append({"category_id": 1, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                            "area": float(person["visible"].sum()), "iscrowd": 0,
                            "segmentation": encode_rle(person["visible"]), "keypoints": keypoints,
                            "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0)})
    return image, annotations


def _params(n=2000, size=128, seed=0, val_fraction=0.2):
    """Validate the generator's arguments and return them as the JSON-ready dict stored in `info`."""
    synthetic.check_common("figures", n, size, val_fraction, min_size=32)
    return {"n": n, "size": size, "seed": int(seed), "val_fraction": float(val_fraction), "version": VERSION}


def _draw_split(params, split, n):
    """The images of one split."""
    for k in range(n):
        rng = np.random.default_rng([params["seed"], synthetic.SPLITS.index(split), k, 17])
        yield _draw_image(rng, params["size"])


def _categories(params):
    """The one category, "person", with COCO's keypoint names and skeleton."""
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": SKELETON}]


GENERATOR = synthetic.Synthetic("figures", DESCRIPTION, _params, _draw_split, _categories)


def generate_figures(out_dir, **kwargs):
    """Write a figures dataset to out_dir (n images split into train/val, size px; seeded, atomic, see
    data.synthetic); return its splits."""
    return synthetic.generate(GENERATOR, out_dir, **kwargs)


def ensure_figures(out_dir, **kwargs):
    """The splits of the figures dataset in out_dir, generated unless it exists with these arguments."""
    return synthetic.ensure(GENERATOR, out_dir, **kwargs)


def load_figures(split="train", out_dir=None, strict=False, **kwargs):
    """The figures source: ensure the dataset exists (arguments as generate_figures), then load it with coco()."""
    return synthetic.load(GENERATOR, split, out_dir, strict, **kwargs)
