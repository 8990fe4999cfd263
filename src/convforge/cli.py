"""The `convforge` command: parses arguments, calls the Python API, prints; known errors are one line, exit 2."""
import argparse
import os
import sys

from convforge.errors import ConvforgeError


def _shape(text):
    """Parse '224,224,3' into a tuple of ints for argparse."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHT,WIDTH,CHANNELS, e.g. 224,224,3") from None
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHT,WIDTH,CHANNELS, e.g. 224,224,3")
    return shape


def _human(n):
    """Format a count as 25.6M / 4.09G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def cmd_models(args):
    """Print the registry: name, family, default input, params and MACs."""
    from convforge.bench import model_table

    rows = model_table(args.pattern, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if not rows:
        raise ConvforgeError(f"no registered model matches {args.pattern!r}; try `convforge models` for all")
    print(f"{'name':<18} {'family':<11} {'input':<12} {'classes':>7} {'params':>12} {'trainable':>12} {'MACs':>8}")
    for r in rows:
        shape = "x".join(str(v) for v in r["input_shape"])
        print(f"{r['name']:<18} {r['family']:<11} {shape:<12} {r['num_classes']:>7} {r['params']:>12,} "
              f"{r['trainable']:>12,} {_human(r['macs']):>8}")
    print(f"{len(rows)} models; params as Keras counts them (trainable: as PyTorch does); MACs per image")
    return 0


def cmd_summary(args):
    """Print one row per layer with output shape, receptive field, jump, params, MACs; optionally draw fields."""
    import convforge
    from convforge import convmath
    from convforge.errors import close_matches

    model = convforge.build_model(args.name, task=args.task, num_classes=args.num_classes,
                                  input_shape=args.input_shape)
    rows = convmath.layer_table(model)
    layers = []
    if args.rf_image:
        fields = {row["name"]: row["rf"] for row in rows}
        levels = list(convforge.feature_levels(model))
        layer = args.layer or levels[-1]
        if layer not in fields:
            raise ConvforgeError(f"{args.name} has no layer {layer!r}{close_matches(layer, fields)}; "
                                 "`convforge summary NAME` lists its layers")
        # Show how far the named layer looks next to the stages around it, skipping levels that repeat it.
        layers = [layer] + [lv for lv in levels if lv != layer and fields[lv] != fields[layer]][-3:]
    print(convmath.format_table(rows))
    if layers:
        from convforge.visualize import draw_receptive_fields

        out = args.out or f"{args.name}_rf_{layers[0].replace('/', '_')}.png"
        draw_receptive_fields(model, args.rf_image, layers, out)
        print(f"receptive fields of {', '.join(layers)} drawn on {args.rf_image}: {out}")
    return 0


def _load_model(spec, weights=None, input_shape=None):
    """Return a model from a registered name (optionally with a .weights.h5 file) or a .keras file path."""
    import keras

    import convforge

    if str(spec).endswith(".keras"):
        if not os.path.isfile(spec):
            raise ConvforgeError(f"model file {spec!r} does not exist")
        return keras.models.load_model(spec, safe_mode=True)
    model = convforge.build_model(spec, input_shape=input_shape)
    if weights:
        if not os.path.isfile(weights):
            raise ConvforgeError(f"weights file {weights!r} does not exist")
        try:
            model.load_weights(weights)
        except ValueError as err:
            raise ConvforgeError(f"weights file {weights!r} does not fit {spec}: {err}".split("\n")[0]) from err
    return model


def cmd_filters(args):
    """Draw an image filtered by hand-made kernels next to the feature maps a model's filters produce."""
    from convforge.layers.filters import KERNELS
    from convforge.visualize import draw_filter_responses

    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    for k in kernels:
        if k not in KERNELS:
            from convforge.errors import close_matches

            raise ConvforgeError(f"kernel {k!r} is unknown{close_matches(k, KERNELS)}; known: {', '.join(KERNELS)}")
    model = _load_model(args.model, args.weights, args.input_shape) if args.model else None
    out = draw_filter_responses(args.image, args.out, kernels, model=model, layer=args.layer)
    print(f"filter responses of {args.image}: {out}")
    return 0


def build_parser():
    """Return the argparse parser of the `convforge` command."""
    parser = argparse.ArgumentParser(prog="convforge", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered architectures with params and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer table: shape, receptive field, jump, params, MACs")
    p.add_argument("name", help="a registered architecture (see `convforge models`)")
    p.add_argument("--input-shape", type=_shape, default=None, help="HEIGHT,WIDTH,CHANNELS (default: the model's)")
    p.add_argument("--task", default="classification", help="task head to attach (default: classification)")
    p.add_argument("--num-classes", type=int, default=None, help="default: the published class count")
    p.add_argument("--rf-image", help="draw receptive fields of --layer and a few feature levels on this image")
    p.add_argument("--layer", help="layer whose centre unit's receptive field is drawn (default: deepest level)")
    p.add_argument("--out", help="PNG to write with --rf-image (default: NAME_rf_LAYER.png)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("filters", help="an image through hand-made kernels (Sobel, blur, ...) next to learned ones")
    p.add_argument("image")
    p.add_argument("--kernels", default="sobel_x,sobel_y,laplacian,gaussian_blur,sharpen",
                   help="comma-separated names from convforge.layers.KERNELS")
    p.add_argument("--model", help="a registered name or a trained .keras file whose first conv is shown")
    p.add_argument("--weights", help="a .weights.h5 file for --model given by name")
    p.add_argument("--layer", help="the layer whose feature maps are shown (default: the first conv)")
    p.add_argument("--input-shape", type=_shape, default=None, help="HEIGHT,WIDTH,CHANNELS for --model by name")
    p.add_argument("--out", default="filters.png", help="PNG to write (default: filters.png)")
    p.set_defaults(func=cmd_filters)
    return parser


def main(argv=None):
    """Run the command line; returns the exit code (2 for bad input)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConvforgeError as err:
        print(f"convforge: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
