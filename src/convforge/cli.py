"""The `convforge` command: parses arguments, calls the Python API, prints; known errors are one line, exit 2."""
import argparse
import os
import sys

from convforge.errors import ConvforgeError
from convforge.modelfile import load_model
from convforge.runs import DIRECTIONS


def _shape(text):
    """Parse '224,224,3' into a tuple of ints for argparse."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHT,WIDTH,CHANNELS, e.g. 224,224,3") from None
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHT,WIDTH,CHANNELS, e.g. 224,224,3")
    return shape


def cmd_models(args):
    """Print the registry: name, family, default input, params, MACs and feature levels."""
    from convforge.bench import model_table
    from convforge.numbers import si
    from convforge.registry import get_spec

    rows = model_table(args.pattern, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if not rows:
        raise ConvforgeError(f"no registered model matches {args.pattern!r}; try `convforge models` for all")
    print(f"{'name':<18} {'family':<11} {'input':<12} {'classes':>7} {'params':>12} {'trainable':>12} {'MACs':>8}  "
          "feature levels")
    for r in rows:
        shape = "x".join(str(v) for v in r["input_shape"])
        print(f"{r['name']:<18} {r['family']:<11} {shape:<12} {r['num_classes']:>7} {r['params']:>12,} "
              f"{r['trainable']:>12,} {si(r['macs']):>8}  {_levels(get_spec(r['name']).feature_levels())}")
    print(f"{len(rows)} models; params as Keras counts them (trainable: as PyTorch does); MACs per image; "
          "level Ck sits at stride 2^k (ResNet's stem: cifar quarters every stride)")
    return 0


def _levels(levels):
    """'C1-C5', or the levels a backbone has and those of C1..C5 it lacks ('C1-C4, no C5')."""
    names = list(levels)
    text = f"{names[0]}-{names[-1]}" if len(names) > 1 else names[0]
    lacking = [f"C{k}" for k in range(1, 6) if f"C{k}" not in levels]
    return text + (f", no {', '.join(lacking)}" if lacking else "")


def cmd_summary(args):
    """Print one row per layer with output shape, receptive field, jump, params, MACs; optionally draw fields."""
    import convforge
    from convforge import convmath
    from convforge.errors import close_matches

    if str(args.name).endswith((".yaml", ".yml")):
        return _summarize_recipe(args)
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


def _summarize_recipe(args):
    """The layer table of each network a recipe builds (a CycleGAN's generator and discriminator once each),
    with the receptive field of each network's output."""
    import keras

    from convforge import convmath
    from convforge.recipes import load_recipe
    from convforge.tasks import get_task
    from convforge.train.datasets import input_shape_of

    recipe = load_recipe(args.name)
    task = get_task(recipe.task, recipe.head)
    model = task.build_model(recipe.model.architecture, args.input_shape or input_shape_of(recipe),
                             recipe.model.num_classes or args.num_classes or 1, recipe.model.options)
    # A model made of networks (CycleGAN) shows one of each design; a plain functional model shows itself.
    parts = [layer for layer in model.layers if isinstance(layer, keras.Model)] or [model]
    shown = {}
    for part in parts:
        shown.setdefault(part.name.rsplit("_", 1)[0], part)
    for part in shown.values():
        rows = convmath.layer_table(part)
        print(f"{part.name}:")
        print(convmath.format_table(rows))
        field = rows[-1]["rf"]
        print(f"{part.name}: each output unit sees {field.size[0]}x{field.size[1]} input pixels "
              f"(jump {field.jump[0]})\n")
    return 0


def _load_model(spec, weights=None, input_shape=None):
    """Return a model from a registered name (optionally with a .weights.h5 file) or a .keras file path."""

    import convforge

    if str(spec).endswith(".keras"):
        if not os.path.isfile(spec):
            raise ConvforgeError(f"model file {spec!r} does not exist")
        return load_model(spec)
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


def cmd_check(args):
    """Validate a recipe (and --set overrides) without training; print the resolved recipe."""
    from convforge.recipes import load_recipe

    recipe = load_recipe(args.recipe, overrides=args.set)
    if args.verbose:
        print(recipe.to_yaml())
    print(f"{args.recipe}: ok ({recipe.task}, {recipe.model.architecture or recipe.head.get('name')})")
    return 0


def cmd_recipe_schema(args):
    """Print the JSON schema of recipes, for editors that complete YAML."""
    import json

    from convforge.recipes import recipe_json_schema

    print(json.dumps(recipe_json_schema(), indent=2))
    return 0


def cmd_data_shapes(args):
    """Write the procedural shapes set as a COCO dataset (images + instances JSON per split)."""
    from convforge.data import generate_shapes

    objects = args.objects
    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else None
    kwargs = dict(n=args.n, size=args.size, seed=args.seed, val_fraction=args.val_fraction, objects=objects,
                  rotate=not args.no_rotate, style=args.style)
    if classes:
        kwargs["classes"] = classes
    splits = generate_shapes(args.out, **kwargs)
    for split, (annotations, images_root) in splits.items():
        print(f"{split}: {annotations} (images in {images_root})")
    return 0


def cmd_data_keypoint_set(args):
    """Write a procedural keypoints set (faces: 68 or 5 landmarks; figures: 17 COCO joints) as COCO keypoints."""
    from convforge import data

    extra = {"landmarks": args.landmarks} if args.data_command == "faces" else {}
    splits = getattr(data, f"generate_{args.data_command}")(args.out, n=args.n, size=args.size, seed=args.seed,
                                                             val_fraction=args.val_fraction, **extra)
    for split, (annotations, images_root) in splits.items():
        print(f"{split}: {annotations} (images in {images_root})")
    return 0


def cmd_data_solids(args):
    """Write the procedural solids set: images with .binvox voxel grids beside them."""
    from convforge.data import generate_solids

    for split, folder in generate_solids(args.out, n=args.n, size=args.size, seed=args.seed,
                                         val_fraction=args.val_fraction, voxels=args.voxels).items():
        print(f"{split}: {folder} (images with .binvox grids, one folder per solid)")
    return 0


def _synthetic_parser(data_sub, name, help_text, layout, size, func):
    """The `convforge data NAME` sub-command of a procedural set, with the arguments every set takes."""
    q = data_sub.add_parser(name, help=help_text)
    q.add_argument("out", help=layout)
    q.add_argument("--n", type=int, default=2000, help="images in total (default: 2000)")
    q.add_argument("--size", type=int, default=size, help=f"image side in pixels (default: {size})")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--val-fraction", type=float, default=0.2)
    q.set_defaults(func=func)
    return q


def _records_for(args):
    """Records to convert: a recipe's split, a COCO JSON, a VOC root or an image folder, by what INPUT is."""
    import pathlib

    from convforge.data import load_source

    path = pathlib.Path(args.input)
    if path.suffix in (".yaml", ".yml"):
        from convforge.recipes import load_recipe
        from convforge.train.datasets import open_source

        recipe = load_recipe(path)
        source = recipe.data.train if args.split == "train" else recipe.data.val
        if source is None:
            raise ConvforgeError(f"{args.input}: data.{args.split} is not set; accepted: --split train, or a "
                                 f"recipe with data.val")
        return open_source(source, recipe.data.strict)
    if path.suffix == ".json":
        if not args.images:
            raise ConvforgeError(f"{args.input} is a COCO JSON: pass --images FOLDER, the root its file_name "
                                 f"entries are relative to")
        return load_source({"source": "coco", "annotations": str(path), "images_root": args.images,
                            "strict": args.strict})
    if path.is_dir() and (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir():
        return load_source({"source": "voc", "root": str(path), "split": args.split, "strict": args.strict})
    if path.is_dir():
        return load_source({"source": "image_folder", "path": str(path), "strict": args.strict})
    raise ConvforgeError(f"{args.input!r} is not a recipe (.yaml), a COCO JSON, a VOC root or an image folder")


def cmd_data_to_tfrecord(args):
    """Convert a dataset into sharded TFRecord files in convforge's documented feature spec."""
    from convforge.data import write_tfrecord

    records = _records_for(args)
    if not hasattr(records, "records"):
        raise ConvforgeError(f"{args.input}: this source is not file-based and has nothing to convert; accepted: "
                             f"COCO, VOC, image folders and the shapes set")
    paths = write_tfrecord(records, args.out, num_shards=args.shards)
    print(f"{len(records.records)} examples, {len(records.class_names)} classes -> {len(paths)} shard(s):")
    for path in paths:
        print(path)
    return 0


def cmd_train(args):
    """Train a recipe; the last line printed is the run folder."""
    from convforge.recipes import load_recipe
    from convforge.train import train

    recipe = load_recipe(args.recipe, overrides=args.set)
    resume = args.resume is not None
    run_dir = args.resume if args.resume not in (None, "latest") else args.run_dir
    train(recipe, run_dir=run_dir, resume=resume, verbose=0 if args.quiet else 1)
    return 0


def cmd_evaluate(args):
    """Evaluate a trained model on the recipe's val split; print the metrics and write them (into --out DIR:
    metrics.json, and for detection COCO results); the last line printed is what was written."""
    from convforge.runs import evaluate

    result = evaluate(args.recipe, weights=args.weights, overrides=args.set, precision=args.precision, out=args.out,
                      detector=args.detector)
    print(f"precision: {result['precision']}")
    for key, value in result.items():
        if key.startswith("val_") and key != "val_confusion_matrix":
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    print(result["out"])
    return 0


def cmd_predict(args):
    """Print the top classes (or the boxes) a trained model gives each image; with --out DIR, also write each
    image at its own size with them drawn, as DIR/<image stem>.png."""
    import contextlib
    import json
    import pathlib

    import numpy as np

    from convforge import preprocessing as pixels
    from convforge.atomic import filling
    from convforge.export.saved_model import input_spec
    from convforge.tasks import task_of_model

    if not os.path.isfile(args.model):
        raise ConvforgeError(f"model file {args.model!r} does not exist")
    # Every image is checked before the model loads or anything is written, so a bad path costs nothing.
    for path in args.images:
        pixels.require_image(path)
    if args.detector:
        return _predict_top_down(args)
    folder = pathlib.Path(args.model).resolve().parent
    with filling(args.out, "--out folder") if args.out else contextlib.nullcontext() as out:
        model = load_model(args.model, args.precision)
        names_file = folder / "class_names.json"
        names = json.loads(names_file.read_text()) if names_file.exists() else []
        shape = input_spec(model)
        # The contract training saved: the same decode, resize, rounding and normalization as the pipeline.
        spec, saved = pixels.saved_beside(args.model, shape)
        task = task_of_model(model, folder)
        for path in args.images:
            image = pixels.read_image(path, shape[2])
            x = pixels.preprocess(image[None], spec)
            outputs = model(x, training=False)
            outputs = {k: np.asarray(v)[0] for k, v in outputs.items()} if isinstance(outputs, dict) else np.asarray(
                outputs)[0]
            results = task.describe(outputs, names, top_k=args.top)
            text = ", ".join(f"{r['class']} {r['probability']:.3f}" + (f" box {r['box']}" if "box" in r else "")
                             for r in results)
            print(f"{path}: {text}")
            if out:
                # `image` is the file at full size: boxes (normalized) are drawn in its own pixels.
                task.draw(image, outputs, names, os.path.join(out, f"{pathlib.Path(path).stem}.png"))
    if not saved:
        print(f"note: no {pixels.FILE_NAME} beside {args.model}, so images were taken as pixels / 255",
              file=sys.stderr)
    return 0


def _predict_top_down(args):
    """predict with --detector: every person the detector finds, with the keypoint model's points on its crop."""
    import contextlib
    import pathlib

    from convforge import preprocessing as pixels
    from convforge.atomic import filling
    from convforge.topdown import TopDown

    with filling(args.out, "--out folder") if args.out else contextlib.nullcontext() as out:
        people = TopDown(args.model, args.detector, precision=args.precision)
        for path in args.images:
            image = pixels.read_image(path, people.shape[2])
            found = people(image)
            means = ", ".join(f"{s:.2f}/{k.mean():.2f}" for s, k in zip(found["box_scores"], found["scores"]))
            print(f"{path}: {len(found['boxes'])} people (box/keypoint scores: {means or '-'})")
            if out:
                from convforge.visualize import draw_keypoints

                draw_keypoints(image, found["keypoints"], found["scores"], people.names,
                               os.path.join(out, f"{pathlib.Path(path).stem}.png"), boxes=found["boxes"])
    return 0


def cmd_attack(args):
    """Attack a trained classifier on its val images; print the measures and write report.json and attack.png."""
    from convforge.attacks.report import run_attack

    settings = {key: value for key, value in (("steps", args.steps), ("max_queries", args.max_queries),
                                              ("norm", args.norm), ("size", args.size)) if value is not None}
    if args.surrogate_attack:
        settings["surrogate_attack"] = args.surrogate_attack
    result = run_attack(args.source, args.attack, eps=args.eps, n=args.n, out=args.out, target=args.target,
                        surrogate=args.surrogate, target_class=args.target_class, seed=args.seed, **settings)
    print(result["out"])
    return 0


def cmd_stylize(args):
    """Stylize a content picture (gatys: against a style picture; fast: with a trained style network)."""
    from convforge.style.stylize import stylize

    result = stylize(args.content, args.out, method=args.method, style=args.style, model=args.model,
                     steps=args.steps, size=args.size, vgg_weights=args.vgg_weights, direction=args.direction)
    print(result["panel"])
    print(result["out"])
    return 0


def cmd_export(args):
    """Export a trained model to each format, verify every artifact in its runtime, and write the model card."""
    from convforge.runs import export_run

    formats = [f.strip() for f in args.formats.split(",")] if args.formats else None
    result = export_run(args.source, args.out, formats, calibration=args.calibration,
                        with_preprocessing=args.with_preprocessing, allow_flex=args.allow_flex, opset=args.opset,
                        int8_io=args.int8_io, fail_on_drop=not args.no_verify_fail, nms=args.nms,
                        direction=args.direction)
    print(result["out_dir"])
    return 0


def cmd_verify(args):
    """Re-check every artifact of an export folder against its card (hashes and outputs)."""
    import convforge.export as exporter

    if not os.path.isdir(args.dir):
        raise ConvforgeError(f"export folder {args.dir!r} does not exist")
    reports = exporter.verify_dir(args.dir)
    for name, report in reports.items():
        print(f"{name}: {report.get('status')} " + ", ".join(f"{k}={v}" for k, v in report.items()
                                                         if k != "status" and isinstance(v, (int, float))))
    return 0


def cmd_bench(args):
    """Time every artifact of an export folder next to its Keras model; print and write the table."""
    from convforge.bench.export_speed import bench_dir, render_markdown, write_results

    result = bench_dir(args.dir, model=args.model, runs=args.runs, batch=args.batch, threads=args.threads,
                       max_seconds=args.max_seconds, keras_call=args.keras_call,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(render_markdown(result), end="")
    json_path, md_path = write_results(result, args.out or args.dir)
    print(f"{json_path}\n{md_path}")
    return 0


def cmd_compare(args):
    """Compare architectures (params, MACs, size, CPU latency, time-to-accuracy); write JSON, Markdown, PNG."""
    from convforge.bench.compare import compare

    result = compare(args.models, input_size=args.input_size, train_recipe=args.train_recipe, overrides=args.set,
                     target_accuracy=args.target_accuracy, out_dir=args.out, runs=args.runs, threads=args.threads,
                     progress=lambda m: print(m, file=sys.stderr, flush=True))
    failed = [r["name"] for r in result["models"] if r.get("error") or r.get("train_error")]
    if failed:
        print(f"{len(failed)} model(s) with a problem, see their rows: {', '.join(failed)}")
    for path in result["files"]:
        print(path)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with convforge's error contract: one line naming the problem, exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"convforge: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _pair(text):
    """Parse 'MIN,MAX' (or one number for both) into two positive ints for argparse."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1 or values[0] > values[1]:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN,MAX with 1 <= MIN <= MAX, e.g. 2,5")
    return values


def build_parser():
    """Return the argparse parser of the `convforge` command."""
    parser = _Parser(prog="convforge", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered architectures with params and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer table: shape, receptive field, jump, params, MACs")
    p.add_argument("name", help="a registered architecture (see `convforge models`), or a recipe: every network it "
                                "builds (a CycleGAN's generator and PatchGAN discriminator)")
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

    overrides = dict(action="append", default=[], metavar="FIELD=VALUE",
                     help="override a recipe field by its dotted path, e.g. train.epochs=3 (repeatable)")
    p = sub.add_parser("check", help="validate a recipe without training")
    p.add_argument("recipe")
    p.add_argument("--set", **overrides)
    p.add_argument("-v", "--verbose", action="store_true", help="print the resolved recipe")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("recipe-schema", help="print the JSON schema of recipes")
    p.set_defaults(func=cmd_recipe_schema)

    p = sub.add_parser("data", help="write an embedded procedural set (shapes, faces, figures, solids), or convert "
                                    "a dataset to TFRecord")
    data_sub = p.add_subparsers(dest="data_command", required=True,
                                metavar="{shapes,faces,figures,solids,to-tfrecord}")
    coco_layout = "folder to write (images/{train,val}/, annotations/instances_{train,val}.json)"
    q = _synthetic_parser(data_sub, "shapes", "generate the procedural shapes set as a COCO dataset", coco_layout,
                          64, cmd_data_shapes)
    q.add_argument("--objects", type=_pair, default=(1, 1), help="MIN,MAX shapes per image (default: 1,1)")
    q.add_argument("--classes", help="comma-separated subset of circle,rectangle,triangle,star")
    q.add_argument("--no-rotate", action="store_true", help="draw shapes upright")
    q.add_argument("--style", choices=("textured", "flat"), default="textured",
                   help="textured (default) or flat: the same scenes of the same seed in flat colours, picture for "
                        "picture")
    q = _synthetic_parser(data_sub, "faces", "generate the procedural faces set (300-W landmarks) as COCO keypoints",
                          coco_layout, 96, cmd_data_keypoint_set)
    q.add_argument("--landmarks", type=int, default=68, choices=(68, 5),
                   help="68 (the 300-W points) or 5 (outer eye corners, nose tip, mouth corners)")
    _synthetic_parser(data_sub, "figures", "generate the procedural figures set (17 COCO joints, one to three "
                      "people) as COCO person keypoints", coco_layout, 128, cmd_data_keypoint_set)
    q = _synthetic_parser(data_sub, "solids", "generate the procedural solids set (images + .binvox voxel grids)",
                          "folder to write ({train,val}/<solid>/NNNNNN.png + .binvox, and info.json)", 64,
                          cmd_data_solids)
    q.add_argument("--voxels", type=int, default=32, help="the voxel grids' side (default: 32)")
    q = data_sub.add_parser("to-tfrecord", help="convert a recipe split, COCO, VOC or image folder to TFRecord")
    q.add_argument("input", help="a recipe .yaml, a COCO instances .json (with --images), a VOC root or an "
                                 "image folder (one sub-folder per class)")
    q.add_argument("out", help="output prefix: OUT-00000-of-0000N.tfrecord and classes.txt beside them")
    q.add_argument("--shards", type=int, default=1)
    q.add_argument("--images", help="the folder a COCO JSON's file_name entries are relative to")
    q.add_argument("--split", choices=("train", "val"), default="train", help="recipe or VOC split")
    q.add_argument("--strict", action="store_true", help="refuse corrupt images instead of skipping them")
    q.set_defaults(func=cmd_data_to_tfrecord)

    p = sub.add_parser("train", help="train a recipe; prints the run folder last")
    p.add_argument("recipe")
    p.add_argument("--set", **overrides)
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN_DIR",
                   help="continue the newest (or the given) run of this recipe from its last finished epoch")
    p.add_argument("--run-dir", help="write the run here instead of runs/<name>/<timestamp>")
    p.add_argument("--quiet", action="store_true", help="no progress bars, one line per epoch")
    p.set_defaults(func=cmd_train)

    precision = dict(choices=("trained", "float32"), default="trained",
                     help="run the model as trained (default) or, for a mixed-precision model, its float32 copy "
                          "(the weights unchanged; what exported artifacts compute)")
    p = sub.add_parser("evaluate", help="the task's metrics on the recipe's val split, printed and as JSON")
    p.add_argument("recipe", help="a recipe (its newest run) or a run folder")
    p.add_argument("--weights", help="a trained .keras model (default: the newest run's model.keras)")
    p.add_argument("--detector", metavar="RUN", help="keypoints trained on crops (top_down): a person detector's "
                                                     "run folder or .keras, scored top-down with OKS AP")
    p.add_argument("--set", **overrides)
    p.add_argument("--out", metavar="DIR", help="folder to write metrics.json into (for detection also "
                                                "detections.json, COCO results in original-image pixels), "
                                                "created if missing (default: evaluation.json beside the model)")
    p.add_argument("--precision", **precision)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top classes (or the boxes) for each image, optionally drawn")
    p.add_argument("model", help="a trained .keras file (a run's model.keras)")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--precision", **precision)
    p.add_argument("--out", metavar="DIR", help="also write each image at its own size with its predictions "
                                                "drawn (boxes, class names, scores) as DIR/<image name>.png; DIR "
                                                "is created if missing")
    p.add_argument("--draw", dest="out", help=argparse.SUPPRESS)  # the flag's name before --out
    p.add_argument("--detector", metavar="RUN", help="for a keypoint model trained on crops (top_down): a person "
                                                     "detector (run folder or .keras); every person it finds gets "
                                                     "keypoints")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("attack", help="attack a trained classifier on its val images: clean vs robust accuracy, "
                                      "a report and a picture")
    p.add_argument("source", help="a recipe (its newest run) or a run folder")
    p.add_argument("--attack", required=True, choices=("fgsm", "pgd", "carlini_wagner", "deepfool", "square",
                                                       "simba", "hop_skip_jump", "transfer", "patch"))
    p.add_argument("--eps", type=float, help="perturbation size on the 0..1 pixel scale (fgsm, pgd, square; "
                                             "simba's step)")
    p.add_argument("--n", type=int, default=200, help="val images attacked (a seeded choice; default 200)")
    p.add_argument("--steps", type=int, help="iterations (pgd, carlini_wagner, deepfool, patch)")
    p.add_argument("--norm", choices=("linf", "l2"), help="pgd's norm (default linf)")
    p.add_argument("--max-queries", type=int, help="query budget per image (square, simba, hop_skip_jump)")
    p.add_argument("--target", metavar="ARTIFACT", help="judge (and, for black-box attacks, query) an exported "
                                                        ".tflite, .onnx or SavedModel instead of the Keras model")
    p.add_argument("--surrogate", metavar="RUN", help="transfer: the recipe or run the examples are crafted on")
    p.add_argument("--surrogate-attack", choices=("fgsm", "pgd", "carlini_wagner", "deepfool"),
                   help="transfer: the white-box attack on the surrogate (default pgd)")
    p.add_argument("--target-class", type=int, default=0, help="patch: the class it pushes toward (default 0)")
    p.add_argument("--size", type=float, help="patch: its side as a share of the image side (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR", required=True, help="folder for report.json and attack.png (created)")
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("stylize", help="paint a picture in a style: gatys (image optimization), fast (a trained "
                                       "style network) or adain (a trained arbitrary-style network); writes the "
                                       "result and a panel")
    p.add_argument("--content", required=True, help="the content picture: a file, or skimage:NAME (a scikit-image "
                                                    "sample: astronaut, chelsea, coffee, ...)")
    p.add_argument("--style", help="the style picture (gatys, adain; fast: the run's own by default)")
    p.add_argument("--method", choices=("gatys", "fast", "adain"), default=None,
                   help="default: the --model's own (adain or fast; a translation run runs as fast), else gatys")
    p.add_argument("--model", metavar="RUN", help="fast: a style or translation recipe, run folder or .keras; adain: "
                                                  "a recipe or run folder")
    p.add_argument("--direction", choices=tuple(DIRECTIONS), default="a2b",
                   help="a translation run: A -> B (model.keras, default) or B -> A (model_b2a.keras)")
    p.add_argument("--steps", type=int, default=200, help="gatys: L-BFGS iterations (default 200)")
    p.add_argument("--size", type=int, default=256, help="gatys: the longer side optimized, in pixels (default "
                                                        "256); the result is written at the content's size")
    p.add_argument("--vgg-weights", metavar="PATH", help="gatys: a local keras.applications VGG19 weights file "
                                                         "(ImageNet features give the classic results)")
    p.add_argument("--out", required=True, metavar="OUT.png", help="the result; OUT_panel.png is written beside it")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("export", help="export a trained model to SavedModel/TFLite/ONNX, each verified")
    p.add_argument("source", help="a recipe (its newest run), a run folder, or a .keras model")
    p.add_argument("--formats", help="comma-separated: saved_model,tflite,tflite_fp16,tflite_dynamic,tflite_int8,onnx, "
                                     "and for a detector tflite_postprocess_op (default: the recipe's export.formats)")
    p.add_argument("--out", help="output folder (default: the recipe's export.out_dir or saved_models/NAME)")
    p.add_argument("--calibration", metavar="PATH",
                   help="int8 calibration images: an image folder (normalized by the preprocessing.json saved "
                        "beside the model, else pixels/255) or an .npy array of normalized inputs")
    p.add_argument("--direction", choices=tuple(DIRECTIONS), default="a2b",
                   help="a translation run: a2b exports model.keras (A -> B), b2a model_b2a.keras (default: a2b; "
                        "b2a's default folder ends in _b2a)")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="the SavedModel takes raw uint8 images of any size and resizes/normalizes them itself")
    p.add_argument("--allow-flex", action="store_true", help="allow TensorFlow (SELECT_TF_OPS) ops in TFLite")
    p.add_argument("--int8-io", choices=("int8", "uint8"), help="input/output type of tflite_int8 (default: the "
                                                                  "recipe's export.int8_io, else int8)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the recipe's export.onnx_opset, else 17)")
    p.add_argument("--nms", choices=("graph", "python"), default="graph",
                   help="where a detector's NMS runs: in every artifact (default), or in Python on the artifacts' "
                        "outputs (convforge.export.apply_nms), for a runtime that cannot hold NMS's ops")
    p.add_argument("--no-verify-fail", action="store_true",
                   help="keep a quantized artifact whose val metric drops more than the recipe allows "
                        "(marked failed in the card) instead of failing the export")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="re-verify an export folder against its model card")
    p.add_argument("dir")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("compare", help="compare architectures: params, MACs, size, CPU latency, time-to-accuracy")
    p.add_argument("--models", default="*", metavar="PATTERN",
                   help="comma-separated names or shell patterns, e.g. 'resnet*,vgg11' (default: all)")
    p.add_argument("--input-size", type=int, default=224, help="square input side, raised to each model's minimum")
    p.add_argument("--train-recipe", metavar="RECIPE", help="also train this recipe with each architecture "
                                                            "and record its time to --target-accuracy")
    p.add_argument("--set", **overrides)
    p.add_argument("--target-accuracy", type=float, default=0.8, help="val accuracy to time (default: 0.8)")
    p.add_argument("--runs", type=int, default=20, help="batch-1 latency runs, median reported (default: 20)")
    p.add_argument("--threads", type=int, default=None, help="threads of TFLite and TensorFlow (default: all cores)")
    p.add_argument("--out", default="compare", help="folder for compare.json/.md/.png (default: compare)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="latency and images/s of every artifact of an export folder, next to Keras")
    p.add_argument("dir", help="a folder written by `convforge export`")
    p.add_argument("--model", help="the .keras model to compare with (default: the one the card names, if any)")
    p.add_argument("--runs", type=int, default=50, help="batch-1 runs for median and p90 (default: 50)")
    p.add_argument("--batch", type=int, default=32, help="batch size of the images/s column (default: 32)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads, the same for all (default: 1)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="stop a timing phase of one artifact after this long (default: 30)")
    p.add_argument("--keras-call", choices=("tf_function", "predict_on_batch"), default="tf_function",
                   help="how Keras is called: one tf.function (default) or model.predict_on_batch")
    p.add_argument("--out", help="folder for bench.json and bench.md (default: DIR)")
    p.set_defaults(func=cmd_bench)
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
    except KeyboardInterrupt:
        print("convforge: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug, not bad input: still one line, with the way to the traceback
        if os.environ.get("CONVFORGE_DEBUG"):
            raise
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        print(f"convforge: internal error: {type(err).__name__}: {first[:300]} (run with CONVFORGE_DEBUG=1 for "
              f"the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
