"""The registry table: params, MACs and build time of every architecture at its default input size.

Building every model takes half a minute or more, so rows are cached per version of the code that defines the
architectures (a hash of backbones/, layers/, the classification tops, registry.py and the Keras version): in the user's cache, and
in `model_table.json` shipped beside this module, written by `make bench` (benchmarks/model_table.py), so a
fresh install answers `convforge models` without building anything while the code matches.
"""
import hashlib
import json
import os
import pathlib
from importlib.metadata import version

from convforge.atomic import write_json
from convforge.registry import get_spec, list_models
from convforge.timing import Stopwatch

_SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = pathlib.Path(__file__).with_name("model_table.json")


def source_key():
    """A hash of the code that defines the architectures, so cached rows expire when a builder changes."""
    digest = hashlib.sha256(version("keras").encode())
    for sub in ("backbones", "layers"):
        for path in sorted((_SOURCE_ROOT / sub).glob("*.py")):
            digest.update(path.read_bytes())
    digest.update((_SOURCE_ROOT / "heads" / "classification.py").read_bytes())
    digest.update((_SOURCE_ROOT / "registry.py").read_bytes())
    return digest.hexdigest()[:16]


def _shipped_rows(key, path=SHIPPED):
    """The rows of the shipped table when it was made from this very code, else none."""
    try:
        table = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return table.get("rows", {}) if table.get("source_key") == key else {}


def write_shipped(rows, path=SHIPPED):
    """Write the shipped table for the current code (benchmarks/model_table.py calls it)."""
    rows = {r["name"]: {k: v for k, v in r.items() if k != "convention"} for r in rows}
    write_json(path, {"source_key": source_key(), "rows": rows})


def model_row(name):
    """Build `name` at its default input and class count and return its params, MACs and build seconds."""
    import keras

    from convforge import convmath
    from convforge.backbones import build_backbone

    spec = get_spec(name)
    num_classes = spec.num_classes
    clock = Stopwatch()
    model = build_backbone(name, num_classes=num_classes)
    seconds = clock.seconds
    params = convmath.count_params(model)
    row = {
        "name": name, "family": spec.family, "input_shape": list(spec.default_input_shape),
        "num_classes": num_classes,
        "params": params["total"], "trainable": params["trainable"], "macs": convmath.count_macs(model),
        "build_seconds": round(seconds, 2), "published_macs": spec.macs,
    }
    keras.backend.clear_session()
    return row


def model_table(pattern="*", cache_dir=None, progress=None):
    """Return model_row for every registered name matching pattern, cached per source version on disk."""
    cache_dir = pathlib.Path(cache_dir or os.environ.get("CONVFORGE_CACHE", "~/.cache/convforge")).expanduser()
    key = source_key()
    cache_file = cache_dir / f"model_table-{key}.json"
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cached = {}
    cached = {**_shipped_rows(key), **cached}
    names = list_models(pattern)
    rows = []
    for i, name in enumerate(names, 1):
        if name not in cached:
            if progress:
                progress(f"[{i}/{len(names)}] building {name} ...")
            cached[name] = model_row(name)
        rows.append(cached[name])
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, cached)
    except OSError:
        pass  # a read-only home only costs the next run its speed
    return rows
