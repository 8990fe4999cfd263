"""The model card beside the artifacts: card.json for programs, card.md for people."""
import hashlib
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version

from convforge.atomic import write_text
from convforge.errors import ExportError
from convforge.numbers import sig

CARD_JSON = "card.json"
CARD_MD = "card.md"
_PACKAGES = {"tensorflow": ("tensorflow-cpu", "tensorflow"), "keras": ("keras",), "tf2onnx": ("tf2onnx",),
             "onnx": ("onnx",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
             "litert": ("ai-edge-litert",), "numpy": ("numpy",)}


def sha256_path(path):
    """SHA-256 of a file, or of a folder as the hash of its sorted (relative path, file hash) lines."""
    if os.path.isfile(path):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    lines = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            lines.append(f"{os.path.relpath(full, path).replace(os.sep, '/')} {sha256_path(full)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def size_bytes(path):
    """Size of a file, or the total size of the files under a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def versions():
    """Installed versions of the libraries that wrote and checked the artifacts."""
    found = {"python": platform.python_version()}
    for key, dists in _PACKAGES.items():
        for dist in dists:
            try:
                found[key] = version(dist)
                break
            except PackageNotFoundError:
                continue
        else:
            found[key] = None
    return found


def render_markdown(card):
    """The card as a short markdown page."""
    spec = card["input"]
    lines = [f"# {card['model']['name']}", "",
             f"Exported {card['created']} by convforge {card['convforge']}.", ""]
    source = card.get("source") or {}
    lines += ["## Source", "",
              f"- recipe: {source.get('recipe') or '-'}" + (f" ({source['recipe_file']})" if source.get("recipe_file")
                                                           else ""),
              f"- model: {source.get('model_path') or '-'}",
              f"- weights SHA-256: `{card['model'].get('weights_sha256', '-')}` "
              f"({card['model']['params']:,} parameters)", ""]
    lines += ["## Input", "",
              f"- `{spec['name']}`: {spec['dtype']} {spec['shape']} (NHWC, batch dynamic)"]
    prep = spec.get("preprocessing")
    if prep:
        lines.append(f"- preprocessing: resize {prep['resize']} ({prep['interpolation']}), "
                     f"{'round to uint8, ' if prep.get('round') else ''}x {prep['scale']:.6g}, "
                     f"mean {prep['mean']}, std {prep['std']}")
    if spec.get("served_preprocessing"):
        lines.append("- the SavedModel takes uint8 images [None, None, None, C] of any size and applies it; "
                     "TFLite and ONNX take the normalized float32 input")
    lines += ["", "## Outputs", ""]
    lines += [f"- `{o['name']}`: {o['dtype']} {o['shape']}" for o in card["outputs"]]
    if card.get("labels"):
        lines.append("- labels (class index order): " + ", ".join(f"{i} `{n}`" for i, n in enumerate(card["labels"])))
    lines += ["", "## Precision", ""] + _precision_lines(card.get("precision"))
    lines += ["", "## Artifacts", "",
              "| file | format | size (KiB) | max abs diff | top-1 agreement | val metric (drop, points) | "
              "latency ms (batch 1, threads) | status | sha256 |",
              "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for a in card["artifacts"]:
        check = a.get("check", {})
        latency = check.get("latency_ms")
        lat = f"{latency['median']:.3g} ({latency['threads']})" if latency else "-"
        scored = check.get("metric")
        val = (f"{scored['name']} {scored['value']:.4f} ({scored['drop_points']:+.2f}"
               + (f", max {scored['max_drop_points']:g})" if "max_drop_points" in scored else ")")) if scored else "-"
        delta = sig(check.get("max_abs_diff"))
        if check.get("max_abs_diff_vs_trained") is not None:
            delta += f" ({sig(check['max_abs_diff_vs_trained'])} vs trained)"
        lines.append(f"| {a['file']} | {a['format']} | {a['bytes'] / 1024:.1f} | {delta} "
                     f"| {sig(check.get('top1_agreement'))} | {val} | {lat} | {check.get('status', '-')} "
                     f"| `{a['sha256'][:16]}…` |")
    for a in card["artifacts"]:
        if a.get("float_ops"):
            lines += ["", f"{a['file']} computes {', '.join(a['float_ops'])} in float32 (between DEQUANTIZE and "
                          f"QUANTIZE): full-integer quantization has no int8 kernel for it, or the model keeps it "
                          f"in float32 on purpose."]
    ver = card["verification"]
    lines += ["", f"float32 formats are compared with Keras on {ver['images']} check images and must agree to "
                  f"max |Δ| <= {ver['max_abs_diff']:g}; quantized ones are reported (top-1 agreement with Keras on "
                  f"softmax outputs, max |Δ|) and judged by how many points of the task metric they lose against "
                  f"Keras on the val split (when the export had one). Latency is the median of "
                  f"{ver.get('latency_runs', '-')} runs on {card['machine']}.", "", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in card["versions"].items()]
    return "\n".join(lines) + "\n"


def _precision_lines(precision):
    """The card's precision section: trained in, exported as, and how far the float32 copy moved."""
    precision = precision or {"trained": "float32", "exported": "float32"}
    lines = [f"- trained in `{precision['trained']}`, exported as `{precision['exported']}`"]
    copy = precision.get("float32_copy_vs_trained")
    if copy:
        text = (f"- the artifacts come from the float32 copy of the trained model (same weights); against the "
                f"{precision['trained']} model on {copy['images']} check images: max |Δ| "
                f"{sig(copy['max_abs_diff'])}")
        if copy.get("top1_agreement") is not None:
            text += f", top-1 agreement {copy['top1_agreement']:.0%}"
        lines.append(text)
        scored = copy.get("metric")
        if scored:
            change = round((scored["value"] - scored["keras"]) * 100.0, 2) + 0.0
            lines.append(f"- val {scored['name']}: {scored['keras']:.4f} as trained, {scored['value']:.4f} float32 "
                         f"copy ({change:+.2f} points)")
    return lines


def write_card(out_dir, card):
    """Write card.json and card.md into out_dir, each atomically; return their paths."""
    json_path, md_path = os.path.join(out_dir, CARD_JSON), os.path.join(out_dir, CARD_MD)
    write_text(json_path, json.dumps(card, indent=2) + "\n")
    write_text(md_path, render_markdown(card))
    return json_path, md_path


def read_card(out_dir):
    """Return the card.json of an export folder, or raise ExportError."""
    path = os.path.join(out_dir, CARD_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            card = json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{out_dir} has no {CARD_JSON}; accepted: a folder written by convforge.export") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{path} is not valid JSON ({getattr(error, 'msg', error)}); accepted: the card "
                          f"convforge.export wrote") from None
    except OSError as error:
        raise ExportError(f"{path} cannot be read ({error.strerror}); accepted: a readable card.json") from None
    check_card(card, path)
    return card


# What verify and bench read from a card: (dotted key, type); a card missing one of them cannot be checked.
_CARD_FIELDS = (("model", dict), ("input", dict), ("input.shape", list), ("outputs", list), ("artifacts", list),
                ("verification", dict), ("verification.max_abs_diff", (int, float)))


def check_card(card, path=CARD_JSON):
    """Raise ExportError naming the first key a card lacks (or holds with the wrong type), or an artifact entry
    that names a file other than its format's (a card must not send verify outside its folder)."""
    from convforge.export.formats import FORMATS

    def lookup(key):
        node = card
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    for key, kind in _CARD_FIELDS:
        value = lookup(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ExportError(f"{path}: {key} is missing or not a {getattr(kind, '__name__', 'number')}; "
                              f"accepted: the card convforge.export wrote")
    shape = card["input"]["shape"]
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        raise ExportError(f"{path}: input.shape {shape} is not [None, H, W, C]; accepted: the card convforge.export "
                          f"wrote")
    for i, entry in enumerate(card["artifacts"]):
        fmt = entry.get("format") if isinstance(entry, dict) else None
        if fmt not in FORMATS or entry.get("file") != FORMATS[fmt].file or not isinstance(entry.get("sha256"), str):
            raise ExportError(f"{path}: artifacts[{i}] is not an artifact entry (format, its file, sha256); "
                              f"accepted: formats {', '.join(FORMATS)} with their own file names")
    for i, output in enumerate(card["outputs"]):
        if not (isinstance(output, dict) and isinstance(output.get("name"), str)):
            raise ExportError(f"{path}: outputs[{i}] has no name; accepted: the card convforge.export wrote")
