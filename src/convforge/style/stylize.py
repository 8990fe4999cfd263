"""`convforge stylize`: one content picture through a style method, written at the content's size with a panel
(content, style, result) beside it.

gatys optimizes the picture itself against a style picture; fast runs a trained style network (a `task: style`
run, or any .keras image-to-image model) over the picture at its own size: the network is fully convolutional
with instance normalization, so the trained weights serve any size (rounded to a multiple of 4 and back); adain
runs a trained AdaIN run on the content and any style picture, rebuilt at the content's size (a multiple of 8).
"""
import pathlib

import numpy as np

from convforge.errors import ConvforgeError

METHODS = ("gatys", "fast", "adain")


def at_size(model, height, width):
    """The same fully convolutional network (same weights) built for height x width pictures."""
    import keras

    clone = keras.models.clone_model(model, input_tensors=keras.Input((height, width, model.inputs[0].shape[-1])))
    clone.set_weights(model.get_weights())
    return clone


def size_multiple(model):
    """The multiple a fully convolutional network's side must be: 2 to the number of its stride-2 layers."""
    strided = [layer for layer in model.layers if max(getattr(layer, "strides", None) or (1,)) > 1]
    return 2 ** len(strided)


def run_network(model, picture):
    """A uint8 picture (H, W, 3) through an image-to-image network reading and writing 0..1, at the picture's size."""
    import tensorflow as tf

    height, width = picture.shape[:2]
    # Each stride-2 stage halves the side, which must come back whole: a multiple of 2 ** stages.
    m = size_multiple(model)
    fitted = (max(m, int(round(height / m)) * m), max(m, int(round(width / m)) * m))
    x = tf.image.resize(tf.cast(picture, tf.float32)[None] / 255.0, fitted, antialias=True)
    network = at_size(model, *fitted) if tuple(model.inputs[0].shape[1:3]) != fitted else model
    out = network(x, training=False)
    out = next(iter(out.values())) if isinstance(out, dict) else out
    out = tf.image.resize(tf.cast(out, tf.float32), (height, width), method="bicubic")[0].numpy()
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def run_adain(run, picture, style_picture):
    """A content picture in the style of another through a trained AdaIN run, at the content's size."""
    import tensorflow as tf

    from convforge.modelfile import load_model
    from convforge.tasks import get_task

    if run.recipe is None or run.recipe.head.get("name") != "adain":
        raise ConvforgeError(f"{str(run.model_path)!r} is not an AdaIN run; accepted: a run folder (or recipe) of "
                             f"a task: style recipe with head.name adain")
    height, width = picture.shape[:2]
    fitted = (max(8, int(round(height / 8)) * 8), max(8, int(round(width / 8)) * 8))
    task = get_task("style", run.recipe.head)
    network = task.build_model(run.recipe.model.architecture, fitted + (3,), 0)
    network.set_weights(load_model(run.model_path, precision="float32").get_weights())

    def fit(image):
        return tf.image.resize(tf.cast(image, tf.float32)[None] / 255.0, fitted, antialias=True)

    out = network({"content": fit(picture), "style": fit(style_picture)}, training=False)
    out = tf.image.resize(tf.cast(out, tf.float32), (height, width), method="bicubic")[0].numpy()
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _panel(pictures, height):
    """Pictures side by side, each scaled to `height` rows."""
    from PIL import Image

    scaled = [np.asarray(Image.fromarray(p).resize((max(1, round(p.shape[1] * height / p.shape[0])), height)))
              for p in pictures]
    return np.concatenate(scaled, 1)


def stylize(content, out, *, method=None, style=None, model=None, steps=200, size=256, vgg_weights=None,
            progress=print, direction="a2b"):
    """Stylize a content picture (file or skimage:NAME) with `method`; writes `out` (PNG, the content's size)
    and <out stem>_panel.png (content, style, result). Returns {"out", "panel", "seconds", ...}.

    method None: the model's own (adain for an AdaIN run, fast for any other trained image-to-image network: a
    fast style run or a translation run, whose `direction` b2a picks its B -> A generator), gatys without one."""
    import time

    from PIL import Image

    from convforge.atomic import replacing
    from convforge.style.features import read_style_image

    if method is None:
        method = "gatys" if model is None else _method_of(model)
    if method not in METHODS:
        raise ConvforgeError(f"method {method!r} is not accepted; accepted: {', '.join(METHODS)}")
    out = pathlib.Path(out)
    if out.suffix.lower() != ".png":
        raise ConvforgeError(f"--out {str(out)!r} is not accepted; accepted: a .png path")
    if not out.parent.is_dir():
        raise ConvforgeError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    picture = read_style_image(content)
    say = progress or (lambda *_: None)
    clock = time.perf_counter()
    info = {}
    if method == "gatys":
        if style is None:
            raise ConvforgeError("the gatys method needs --style: a style picture (a file or skimage:NAME)")
        from convforge.style.gatys import gatys

        style_picture = read_style_image(style)
        if not vgg_weights:
            say("stylize: no --vgg-weights: the VGG keeps seeded random weights, which synthesize textures but not "
                "the classic looks; pass keras.applications' VGG19 ImageNet file for those")
        result, info = gatys(picture, style_picture, steps=steps, size=size, vgg_weights=vgg_weights,
                             progress=say)
    elif method == "adain":
        from convforge.runs import find_run

        if model is None or style is None:
            raise ConvforgeError("the adain method needs --model (a trained AdaIN run: recipe or run folder) and "
                                 "--style (any style picture: a file or skimage:NAME)")
        run = find_run(model)
        style_picture = read_style_image(style)
        result = run_adain(run, picture, style_picture)
        info = {"model": str(run.model_path)}
    else:
        if model is None:
            raise ConvforgeError("the fast method needs --model: a trained style run (recipe, run folder or .keras)")
        from convforge.modelfile import load_model
        from convforge.runs import find_run

        run = find_run(model, direction=direction)
        network = load_model(run.model_path, precision="float32")
        shape = network.inputs[0].shape
        if len(network.outputs) != 1 or tuple(network.outputs[0].shape[1:]) != tuple(shape[1:]):
            raise ConvforgeError(f"{model!r} is not an image-to-image model (input {tuple(shape)}, output "
                                 f"{tuple(network.outputs[0].shape)}); accepted: a task: style or translation "
                                 f"run")
        style = style or (run.recipe.head.get("style_image") if run.recipe is not None else None)
        style_picture = read_style_image(style) if style else None
        result = run_network(network, picture)
        info = {"model": str(run.model_path)}
    seconds = time.perf_counter() - clock
    panel_path = out.with_name(f"{out.stem}_panel.png")
    shown = [picture] + ([style_picture] if style_picture is not None else []) + [result]
    for path, image in ((out, result), (panel_path, _panel(shown, min(256, picture.shape[0])))):
        with replacing(path, "wb") as handle:
            Image.fromarray(image).save(handle, format="png")
    say(f"stylize: {method} in {seconds:.1f} s -> {out}")
    return {"out": str(out), "panel": str(panel_path), "seconds": round(seconds, 2), "method": method, **info}



def _method_of(model):
    """The stylize method a trained model runs with: adain for an AdaIN run, fast for the others."""
    from convforge.runs import find_run

    recipe = find_run(model).recipe
    return "adain" if recipe is not None and recipe.head.get("name") == "adain" else "fast"
