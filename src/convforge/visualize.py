"""Pictures of what a CNN's units can see, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os

from .atomic import replacing
from .errors import ConvforgeError, close_matches


def _load_image(image_path, height, width):
    """Return the image at image_path as an RGB uint8 array resized to height x width."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(image_path)
    if not os.path.isfile(path):
        raise ConvforgeError(f"image {path!r} does not exist or is not a file")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((width, height), Image.BILINEAR)
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConvforgeError(f"image {path!r} could not be read: {exc}") from None


def _model_input_hw(rows):
    for row in rows:
        if row["type"] == "InputLayer" and row.get("spatial"):
            return row["spatial"]
    raise ConvforgeError("the model has no image input with a fixed height and width")


def _title(name, rf):
    if rf.is_global:
        return f"{name}: RF global"
    size = f"{rf.size[0]}" if rf.size[0] == rf.size[1] else f"{rf.size[0]}x{rf.size[1]}"
    jump = f"{rf.jump[0]}" if rf.jump[0] == rf.jump[1] else f"{rf.jump[0]}x{rf.jump[1]}"
    return f"{name}: RF {size}, jump {jump}" + (" (+global context)" if rf.global_context else "")


def draw_receptive_fields(model, image_path, layers, out_path):
    """Draw the receptive field of each named layer's centre unit over an image and save one PNG."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from . import convmath

    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ConvforgeError("name at least one layer to draw")
    rows = {row["name"]: row for row in convmath.layer_table(model)}
    for name in layers:
        if name not in rows:
            hint = close_matches(name, rows) or " (its layers include " + ", ".join(list(rows)[1:6]) + ", ...)"
            raise ConvforgeError(f"model {getattr(model, 'name', 'model')!r} has no layer {name!r}{hint}")
    height, width = _model_input_hw(rows.values())
    image = _load_image(image_path, height, width)

    fig = Figure(figsize=(4.2 * len(layers), 4.6), dpi=100)
    for k, name in enumerate(layers):
        row = rows[name]
        rf = row["rf"]
        if rf is None:
            raise ConvforgeError(
                f"the receptive field of layer {name!r} ({row['type']}) is unknown; "
                "see convmath.receptive_fields(model, strict=True) for the layer that stops it"
            )
        ax = fig.add_subplot(1, len(layers), k + 1)
        # Pixel i covers [i - 0.5, i + 0.5] so boxes in pixel indices line up with the image.
        ax.imshow(image, extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="nearest")
        if rf.is_global:
            top, left, bottom, right = 0, 0, height - 1, width - 1
            centre = ((height - 1) / 2, (width - 1) / 2)
        else:
            spatial = row.get("spatial") or (1, 1)
            unit = (spatial[0] // 2, spatial[1] // 2)
            top, left, bottom, right = rf.box(*unit)
            centre = rf.center(*unit)
        clipped = (max(top, 0), max(left, 0), min(bottom, height - 1), min(right, width - 1))
        if clipped[0] <= clipped[2] and clipped[1] <= clipped[3]:
            ax.add_patch(Rectangle((clipped[1] - 0.5, clipped[0] - 0.5), clipped[3] - clipped[1] + 1,
                                   clipped[2] - clipped[0] + 1, fill=False, edgecolor="red", linewidth=2))
        outside = top < 0 or left < 0 or bottom > height - 1 or right > width - 1
        if outside:
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                   edgecolor="red", linewidth=1.2, linestyle="--"))
            # Widen the view so the part of the field that lies in the padding is visible.
            x0, x1 = min(left, 0) - 0.5, max(right, width - 1) + 0.5
            y0, y1 = min(top, 0) - 0.5, max(bottom, height - 1) + 0.5
            margin = 0.03 * max(x1 - x0, y1 - y0)
            ax.set_xlim(x0 - margin, x1 + margin)
            ax.set_ylim(y1 + margin, y0 - margin)
            ax.set_facecolor("#e8e8e8")
        else:
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
        ax.plot([centre[1]], [centre[0]], marker="+", color="yellow", markersize=12, markeredgewidth=2)
        ax.set_title(_title(name, rf), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save_figure(fig, out_path)


def _save_figure(fig, out_path):
    """Write a matplotlib figure as PNG atomically (temp file in the same folder, then rename)."""
    out_path = os.fspath(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise ConvforgeError(f"cannot write {out_path!r}: folder {folder!r} does not exist")
    with replacing(out_path, "wb") as handle:
        fig.savefig(handle, format="png")
    return out_path


def _first_conv(model):
    """Return the name of the first Conv2D layer of a model (where learned filters meet the pixels)."""
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D":
            return layer.name
    raise ConvforgeError(f"model {model.name!r} has no Conv2D layer to compare with the hand-made filters")


def draw_filter_responses(image_path, out_path, kernels=("sobel_x", "sobel_y", "laplacian", "gaussian_blur"),
                          model=None, layer=None, maps=4):
    """Draw an image's responses to hand-made kernels and, given a model, to the filters it learned.

    The top row is the grey image filtered by each fixed kernel of convforge.layers.ImageFilter; the bottom
    row (with `model`) shows the strongest `maps` feature maps of `layer` (default: its first conv).
    """
    import numpy as np
    import keras
    from matplotlib.figure import Figure

    from convforge.layers.filters import ImageFilter

    size = (224, 224)
    if model is not None:
        size = tuple(model.input.shape[1:3])
    image = _load_image(image_path, *size).astype("float32") / 255.0
    grey = image.mean(axis=-1, keepdims=True)[None]
    fixed = np.asarray(ImageFilter(list(kernels))(grey))[0]
    panels = [("image", image)] + [(k, fixed[..., i]) for i, k in enumerate(kernels)]
    learned = []
    if model is not None:
        layer = layer or _first_conv(model)
        names = [lyr.name for lyr in model.layers]
        if layer not in names:
            raise ConvforgeError(f"model {model.name!r} has no layer {layer!r}{close_matches(layer, names)}")
        probe = keras.Model(model.input, model.get_layer(layer).output)
        channels = model.input.shape[-1]
        batch = (image if channels == 3 else image.mean(axis=-1, keepdims=True))[None]
        out = np.asarray(probe(batch, training=False), dtype="float32")[0]
        strongest = np.argsort(-np.abs(out).mean(axis=(0, 1)))[:maps]
        learned = [(f"{layer}[{c}]", out[..., c]) for c in strongest]
    cols = max(len(panels), len(learned))
    rows = 2 if learned else 1
    fig = Figure(figsize=(2.6 * cols, 2.9 * rows), dpi=100)
    for r, row in enumerate([panels] + ([learned] if learned else [])):
        for c, (title, data) in enumerate(row):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.imshow(data, cmap=None if data.ndim == 3 else "gray", interpolation="nearest")
            ax.set_title(("hand-made: " if r == 0 and c else "model: " if r else "") + title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return _save_figure(fig, out_path)


def draw_predictions(image, results, out_path):
    """Draw one image's predictions and write a PNG: each result's box (normalized [ymin, xmin, ymax, xmax]) in the
    image's own pixels with its class and probability, or, for results without boxes, the classes as a caption."""
    import numpy as np
    from PIL import Image, ImageDraw

    from convforge.evaluate.coco import coco_bbox

    pixels = np.asarray(image, dtype=np.uint8)
    canvas = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    # Boxes are drawn on the image as it is, so the PNG's pixels are the ones its boxes describe; a caption alone
    # on a small input (32-64 px) is enlarged so that it stays readable.
    if not any("box" in r for r in results):
        scale = max(1, 256 // max(canvas.size))
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    captions = []
    for r in results:
        label = f"{r['class']} {r['probability']:.2f}"
        if "box" in r:
            x, y, w, h = coco_bbox(r["box"], width, height)
            draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=2)
            # The label sits inside the box's top-left corner, moved in where it would leave the image.
            _, _, right, bottom = draw.textbbox((0, 0), label)
            origin = (min(max(x + 3, 0), max(width - right - 1, 0)), min(max(y + 2, 0), max(height - bottom - 1, 0)))
            left, top, right, bottom = draw.textbbox(origin, label)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(0, 0, 0))
            draw.text(origin, label, fill=(255, 255, 0))
        else:
            captions.append(label)
    if captions:
        draw.rectangle([0, 0, width, 12 * len(captions) + 4], fill=(0, 0, 0))
        for i, caption in enumerate(captions):
            draw.text((3, 2 + 12 * i), caption, fill=(255, 255, 255))
    with replacing(out_path, "wb") as handle:
        canvas.save(handle, format="PNG")
    return out_path


def class_colours(count):
    """(count, 3) uint8 colours, class 0 black: PASCAL VOC's palette (bits of the class id spread over R, G, B)."""
    import numpy as np

    colours = np.zeros((count, 3), np.uint8)
    for c in range(count):
        value, r, g, b = c, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[c] = (r, g, b)
    return colours


def draw_segmentation(image, classes, class_names, out_path, alpha=0.55):
    """Write a PNG of the image (at its own size) with each pixel's class (a (h, w) class map at any size,
    resized by nearest neighbour) in its colour over it, the background left as it is, and a legend."""
    import numpy as np
    from PIL import Image, ImageDraw

    pixels = np.asarray(image, dtype=np.uint8)
    canvas = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    scale = max(1, 256 // max(canvas.size))  # small inputs (32-64 px) are enlarged so the legend stays readable
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    classes = np.asarray(classes)
    rows = (np.arange(canvas.height) * classes.shape[0] // canvas.height).clip(0, classes.shape[0] - 1)
    cols = (np.arange(canvas.width) * classes.shape[1] // canvas.width).clip(0, classes.shape[1] - 1)
    mapped = classes[rows][:, cols]
    palette = class_colours(max(len(class_names), int(mapped.max()) + 1))
    base = np.asarray(canvas, np.float32)
    blended = np.where((mapped > 0)[..., None], (1 - alpha) * base + alpha * palette[mapped], base)
    canvas = Image.fromarray(blended.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    shown = [int(c) for c in np.unique(mapped) if c > 0]
    for i, c in enumerate(shown):
        name = class_names[c] if c < len(class_names) else str(c)
        draw.rectangle([2, 2 + 12 * i, 10, 10 + 12 * i], fill=tuple(int(v) for v in palette[c]))
        draw.text((13, 12 * i), name, fill=(255, 255, 255))
    with replacing(out_path, "wb") as handle:
        canvas.save(handle, format="PNG")
    return out_path


def draw_instances(image, results, masks, out_path, alpha=0.5):
    """Write a PNG of the image with each result's mask ((N, H, W) bool at the image's size) in its own colour,
    then its box, class and score drawn as draw_predictions draws them."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.uint8)
    canvas = np.asarray(pixels[..., :1].repeat(3, -1) if pixels.shape[-1] == 1 else pixels, np.float32)
    masks = np.asarray(masks, bool)
    # Small inputs (32-96 px) are enlarged, masks alike (nearest neighbour), so the shapes stay visible under
    # their labels; boxes are normalized, so they land on the same pixels.
    scale = max(1, 256 // max(canvas.shape[:2]))
    canvas = canvas.repeat(scale, 0).repeat(scale, 1)
    masks = masks.repeat(scale, 1).repeat(scale, 2) if masks.ndim == 3 else masks
    palette = class_colours(len(results) + 2)[2:]  # distinct non-black colours, one per instance
    for mask, colour in zip(masks, palette):
        canvas = np.where(mask[..., None], (1 - alpha) * canvas + alpha * colour, canvas)
    return draw_predictions(canvas.round().astype(np.uint8), results, out_path)


def draw_keypoints(image, points, scores, names, out_path, skeleton=None, boxes=None):
    """Write a PNG of the image with its keypoints ((K, 2) or, for P people, (P, K, 2) normalized x, y; each
    coloured by its score, from red at 0 to green at 1) joined by the skeleton (1-based pairs; default: the one
    its names imply), and each person's box (P, 4 normalized yxyx) where given."""
    import numpy as np
    from PIL import Image, ImageDraw

    from convforge.data.instances import skeleton_of

    pixels = np.asarray(image, dtype=np.uint8)
    canvas = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    # Small inputs are enlarged so that 68 landmarks stay apart; points are normalized, so they scale along.
    scale = max(1, 384 // max(canvas.size))
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    points = np.asarray(points, np.float32)
    size = np.array(canvas.size, np.float32)
    people = points.reshape(-1, points.shape[-2] if points.ndim > 1 else 1, 2) * size
    scores = np.clip(np.asarray(scores, np.float32).reshape(people.shape[:2]), 0, 1)
    for y0, x0, y1, x1 in np.asarray(boxes if boxes is not None else np.zeros((0, 4)), np.float32).reshape(-1, 4):
        draw.rectangle([x0 * size[0], y0 * size[1], x1 * size[0], y1 * size[1]], outline=(255, 220, 0), width=2)
    pairs = skeleton_of(names) if skeleton is None else skeleton
    radius = max(2, min(canvas.size) // 120)
    for xy, person_scores in zip(people, scores):
        for a, b in pairs:
            if a - 1 < len(xy) and b - 1 < len(xy):
                draw.line([tuple(xy[a - 1]), tuple(xy[b - 1])], fill=(80, 200, 255), width=2)
        for (x, y), s in zip(xy, person_scores):
            colour = (int(255 * (1 - s)), int(255 * s), 40)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
    with replacing(out_path, "wb") as handle:
        canvas.save(handle, format="PNG")
    return out_path


def draw_mesh(image, vertices, faces, out_path):
    """Write a PNG of the image beside a shaded render of a mesh in the camera's frame (x right, y up, z towards
    the viewer, over [-1, 1]^3), seen a little from above and the side so that its depth shows."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from PIL import Image

    pixels = np.asarray(image, dtype=np.uint8)
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    side = 320
    picture = picture.resize((side, side * picture.height // picture.width), Image.BILINEAR)
    fig = plt.figure(figsize=(3.2, 3.2), dpi=100)
    ax = fig.add_subplot(projection="3d")
    vertices = np.asarray(vertices, np.float64)
    if len(faces):
        # Matplotlib's third axis is up: plot (x, z, y), so the image's up stays up.
        triangles = vertices[np.asarray(faces)][..., [0, 2, 1]]
        normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-9)
        light = np.array([0.3, -0.6, 0.75])
        shade = 0.3 + 0.7 * np.abs(normals @ (light / np.linalg.norm(light)))
        ax.add_collection3d(Poly3DCollection(triangles, facecolors=np.outer(shade, [0.45, 0.65, 0.9]),
                                             edgecolors="none"))
    else:
        ax.text(0, 0, 0, "empty grid", ha="center")
    ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
    ax.view_init(elev=20, azim=-65)
    ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    render = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").resize((side, side), Image.BILINEAR)
    canvas = Image.new("RGB", (picture.width + side, max(picture.height, side)), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(render, (picture.width, 0))
    with replacing(out_path, "wb") as handle:
        canvas.save(handle, format="PNG")
    return out_path


def draw_picture_grid(rows, out_path, row_titles=None, column_titles=None):
    """Write a grid of pictures: rows of float (N, H, W, 3) arrays on 0..1 (or uint8), each row titled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns + 0.6, 1.6 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(row):
                picture = np.asarray(row[j])
                ax.imshow(picture if picture.dtype == np.uint8 else np.clip(picture, 0.0, 1.0))
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], fontsize=9)
            if i == 0 and column_titles and j < len(column_titles):
                ax.set_title(column_titles[j], fontsize=9)
    fig.tight_layout()
    try:
        return _save_figure(fig, out_path)
    finally:
        plt.close(fig)


def draw_beside(image, picture, out_path):
    """Write a uint8 picture (H, W, C) beside a network's picture of it (on 0..1, batched or not), at its size."""
    import numpy as np
    from PIL import Image

    picture = np.asarray(picture, np.float32)
    picture = picture[0] if picture.ndim == 4 else picture
    made = np.clip(np.round(picture * 255), 0, 255).astype(np.uint8)
    original = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize(made.shape[1::-1]))
    with replacing(out_path, "wb") as handle:
        Image.fromarray(np.concatenate([original, made], 1)).save(handle, format="png")
    return out_path
