"""Reading a recipe: YAML, `base:` inheritance, `--set` overrides, validation into one-line errors.

Every problem becomes one RecipeError line, `FILE: DOTTED.FIELD: what is wrong; accepted: ...`, where FILE is
the file (or the `--set KEY=VALUE`) that gave the offending value.
"""
import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path


import yaml
from pydantic import BaseModel, Tag, ValidationError

from convforge.errors import RecipeError, close_matches
from convforge.recipes.schema import SOURCE_CLASSES, FieldError, Recipe

# A recipe is a page of YAML; megabytes are an accident or an attack (a 50 MB file took 860 MB to check).
MAX_RECIPE_BYTES = 4 * 2 ** 20


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does: `1e-3`, `1E5` and `.5` are numbers.

    YAML 1.1 (PyYAML's default) wants a dot and a signed exponent (`1.0e-3`) and reads `1e-3` as a string,
    which is what every user writes for a learning rate. Integers still resolve first, so `3` stays an int.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|"
               r"^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


# Values a recipe may hold once YAML aliases are expanded: a real recipe has a few hundred; a "billion laughs"
# alias chain grows to gigabytes when the merge and validation copy it.
MAX_EXPANDED_VALUES = 20_000


def _load_yaml(text, label="--set"):
    """Parse YAML text with the safe loader and YAML 1.2 floats; refuse aliases that expand past a bound."""
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass: no Python tags
    count, stack = 0, [data]
    while stack:  # counts shared (aliased) values once per use, which is what a copy of them costs
        node = stack.pop()
        count += 1
        if count > MAX_EXPANDED_VALUES:
            raise RecipeError(f"{label}: expands to more than {MAX_EXPANDED_VALUES:,} values (YAML aliases "
                              f"repeating each other, or a self-referencing alias); accepted: a recipe without "
                              f"such alias chains")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


# Mappings that are one kind of thing picked by a key: changing the key replaces the mapping (see schema).
_KINDS = {("data", "train"): "source", ("data", "val"): "source", ("train", "optimizer"): "name",
          ("train", "schedule"): "name", ("head",): "name"}


def _kind_key(loc):
    """The key that picks the kind of the mapping at loc, or None; augment items are kinds by name too."""
    if len(loc) == 3 and loc[:2] == ("data", "augment") and isinstance(loc[2], int):
        return "name"
    return _KINDS.get(tuple(loc))
_NOUNS = {"task": "task", "precision": "precision policy", "distribution": "distribution strategy",
          "formats": "export format", "normalize": "normalization", "split": "split", "mode": "mode",
          "schedule": "schedule", "train": "data source", "val": "data source"}


@dataclasses.dataclass
class _Layer:
    """One contribution to the merged recipe: a file's mapping, or one --set override."""

    label: str
    folder: Path
    data: dict = None
    keys: tuple = None  # set for an override: the path it wrote
    path: Path = None  # set for a file

    def covers(self, loc):
        """True when this layer wrote the value at loc, or a mapping above or below it."""
        if self.keys is not None:
            n = min(len(loc), len(self.keys))
            return tuple(loc[:n]) == self.keys[:n]
        return _has(self.data, loc)


def _display(path):
    """A path as a user would type it: relative to the working directory when below it."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _has(tree, loc):
    """True when the nested mappings and lists of tree hold a value at loc."""
    node = tree
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def _read_yaml(path):
    """Return the mapping in one YAML file, or raise RecipeError naming the file and line."""
    label = _display(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{label}: {size / 2 ** 20:.1f} MiB is not a recipe; accepted: a YAML file under "
                              f"{MAX_RECIPE_BYTES // 2 ** 20} MiB")
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{label}: recipe file not found") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"{label}: not UTF-8 text (byte {err.start}); accepted: a YAML recipe file") from None
    except OSError as err:
        raise RecipeError(f"{label}: cannot read the recipe ({err.strerror})") from None
    try:
        data = _load_yaml(text, label)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{label}: {where}invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{label}: expected a mapping of recipe sections (name, task, model, data, train, "
                          f"export), got a {type(data).__name__}")
    return data


def _read_chain(path, stack=()):
    """Return the layers of a recipe and its bases, the farthest base first."""
    path = Path(path).absolute()
    if path in stack:
        cycle = " -> ".join(_display(p) for p in (*stack[stack.index(path):], path))
        raise RecipeError(f"{_display(stack[-1])}: base: inheritance cycle {cycle}")
    data = _read_yaml(path)
    layer = _Layer(_display(path), path.parent, data, path=path)
    base = data.pop("base", None)
    if base is None:
        return [layer]
    if not isinstance(base, str):
        raise RecipeError(f"{layer.label}: base: {base!r} is not a path; accepted: a recipe file relative to "
                          f"this one")
    base_path = Path(os.path.normpath(path.parent / os.path.expanduser(base)))
    if not base_path.is_file():
        raise RecipeError(f"{layer.label}: base: file {base!r} not found (looked for {_display(base_path)})")
    return [*_read_chain(base_path, (*stack, path)), layer]


def _merge(base, over, loc=()):
    """Deep-merge `over` into `base`: mappings merge key by key, anything else (lists too) replaces."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    tag = _kind_key(loc)
    if tag and tag in over and tag in base and over[tag] != base[tag]:
        return copy.deepcopy(over)
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value, (*loc, key)) if key in merged else copy.deepcopy(value)
    return merged


def _parse_override(item):
    """Split 'a.b.c=VALUE' into its key path and YAML-parsed value."""
    key, sep, text = str(item).partition("=")
    keys = tuple(k.strip() for k in key.strip().split("."))
    if not sep or not all(keys):
        raise RecipeError(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
    try:
        value = _load_yaml(text, f"--set {item}") if text.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(f"--set {item}: the value is not valid YAML ({getattr(err, 'problem', err)})") from None
    if keys[0] not in Recipe.model_fields or keys[0] == "base":
        raise RecipeError(f"--set {item}: {keys[0]}: {_unknown_field(keys[0], Recipe, exclude=('base',))}")
    return tuple(int(k) if k.lstrip("-").isdigit() else k for k in keys), value


def _apply_override(tree, keys, value, item):
    """Set tree at the key path, creating mappings on the way; changing a kind's key starts that kind anew."""
    node = tree
    for depth, key in enumerate(keys[:-1]):
        loc = keys[:depth + 1]
        if isinstance(node, list):
            if not isinstance(key, int) or not -len(node) <= key < len(node):
                raise RecipeError(f"--set {item}: {_dotted(loc[:-1])} has {len(node)} items; {key!r} is not an "
                                  f"index of them")
            child = node[key]
        else:
            child = node.get(key)
        if isinstance(child, str) and _kind_key(loc):
            # `optimizer: adam` and `augment: [flip]` are shorthands for {name: ...}
            child = {_kind_key(loc): child}
        elif not isinstance(child, (dict, list)):
            child = {}
        node[key] = child
        node = child
    last = keys[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or not -len(node) <= last < len(node):
            raise RecipeError(f"--set {item}: {_dotted(keys[:-1])} has {len(node)} items; {last!r} is not an "
                              f"index of them")
        node[last] = value
        return
    if _kind_key(keys[:-1]) == last and node.get(last, value) != value:
        node.clear()
    node[last] = value


def _resolve_paths(tree, layers):
    """Make the input paths absolute against the folder of the layer that set them."""
    slots = [("model", "weights")]
    data = tree.get("data")
    if isinstance(data, dict):
        train = data.get("train") if isinstance(data.get("train"), dict) else {}
        for split in ("train", "val"):
            source = data.get(split)
            # A val without `source` is train's kind (the schema merges it over train).
            kind = source.get("source", train.get("source")) if isinstance(source, dict) else None
            if kind in SOURCE_CLASSES:
                slots += [("data", split, f) for f in SOURCE_CLASSES[kind].file_fields]
    for loc in slots:
        node = tree
        for key in loc[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(loc[-1]) if isinstance(node, dict) else None
        if not isinstance(value, str) or os.path.isabs(os.path.expanduser(value)):
            continue
        folder = next((layer.folder for layer in reversed(layers) if layer.covers(loc)), Path.cwd())
        node[loc[-1]] = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))


# ------------------------------------------------------------------------------------ ValidationError -> line

def _members(tp, tag=None):
    """The concrete types an annotation may hold, each with its union Tag (Optional and Annotated removed)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        args = typing.get_args(tp)
        tag = next((m.tag for m in args[1:] if isinstance(m, Tag)), tag)
        return _members(args[0], tag)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [] if tp is type(None) else [(tag, tp)]


def _is_model(tp):
    """True for a pydantic model class."""
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _selects(tag, tp, part):
    """True when a pydantic loc element names this union member (by Tag, discriminator value or class)."""
    if part == tag or part == getattr(tp, "__name__", None):
        return True
    if _is_model(tp):
        for field in tp.model_fields.values():
            if typing.get_origin(field.annotation) is typing.Literal and typing.get_args(field.annotation) == (part,):
                return True
    return False


def _walk(loc):
    """Return (the loc without union selectors, the model holding its last field, the last field's type)."""
    shown, tp, holder = [], Recipe, None
    for part in loc:
        members = _members(tp) if tp is not None else []
        if isinstance(part, int):
            seq = next((m for _, m in members if typing.get_origin(m) in (list, tuple)), None)
            shown.append(part)
            tp = typing.get_args(seq)[0] if seq is not None else None
            continue
        if len(members) > 1:
            chosen = next((m for tag, m in members if _selects(tag, m, part)), None)
            if chosen is not None:
                tp = chosen
                continue
        models = [m for _, m in members if _is_model(m)]
        holder = models[0] if models else None
        shown.append(part)
        field = holder.model_fields.get(part) if holder is not None else None
        tp = field.annotation if field is not None else None
    return tuple(shown), holder, tp


def _show(value):
    """A value as YAML spells it (null, true), else its repr."""
    if value is None or isinstance(value, bool):
        return yaml.safe_dump(value).split("\n")[0]
    return repr(value)


def _dotted(loc):
    """('data', 'augment', 1, 'name') -> 'data.augment[1].name'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _literal_values(tp):
    """The values a Literal annotation (possibly inside Optional/Annotated) allows."""
    values = []
    for _, m in _members(tp):
        if typing.get_origin(m) is typing.Literal:
            values += typing.get_args(m)
    return values


def _unknown_field(key, holder, exclude=()):
    """The message for a key that `holder` (a model class) does not have, with the closest ones."""
    accepted = [f for f in holder.model_fields if f not in exclude] if holder is not None else []
    hint = close_matches(key, accepted)
    if holder is Recipe and not hint:
        # A section's key written at the top level is the likely slip: point into the section.
        nested = {f"{section}.{field}": field for section, info in Recipe.model_fields.items()
                  if _is_model(info.annotation) for field in info.annotation.model_fields}
        near = difflib.get_close_matches(str(key), list(nested.values()), n=3, cutoff=0.75)
        places = [dotted for dotted, field in nested.items() if field in near]
        hint = f" (did you mean {' or '.join(repr(p) for p in places)}?)" if places else ""
    return f"unknown field {key!r}{hint}; accepted: {', '.join(accepted)}"


def _describe(error, loc, holder, tp):
    """Return (loc, message) for one pydantic error, in convforge's words."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    noun = _NOUNS.get(field, "accepted value")
    if kind == "extra_forbidden":
        return loc, _unknown_field(loc[-1], holder)
    if kind == "missing":
        return loc, "missing required field"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_key = str(ctx.get("discriminator", "")).strip("'")
        accepted = [str(t).strip("'") for t in str(ctx.get("expected_tags", "")).split(", ") if t]
        loc = (*loc, tag_key)
        if kind == "union_tag_not_found":
            return loc, f"missing required field; accepted: {', '.join(accepted)}"
        tag = ctx.get("tag")
        return loc, f"{tag!r} is not a {noun}{close_matches(tag, accepted)}; accepted: {', '.join(accepted)}"
    if kind == "literal_error":
        accepted = [str(v) for v in _literal_values(tp)]
        if not accepted:
            accepted = [v.strip().strip("'") for v in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        article = "an" if noun[0] in "aeiou" else "a"
        return loc, (f"{value!r} is not {article} {noun}{close_matches(value, accepted)}; "
                     f"accepted: {', '.join(accepted)}")
    if kind == "value_error":
        err = ctx.get("error")
        if isinstance(err, FieldError):
            return (*loc, *err.loc), str(err)
        return loc, str(err) if err is not None else error["msg"]
    simple = {
        "int_type": "is not an integer", "int_parsing": "is not an integer", "int_from_float": "is not an integer",
        "float_type": "is not a number", "float_parsing": "is not a number",
        "bool_type": "is not true or false", "bool_parsing": "is not true or false",
        "string_type": "is not a string", "list_type": "is not a list", "dict_type": "is not a mapping",
        "model_type": "is not a mapping", "model_attributes_type": "is not a mapping",
    }
    if kind in simple:
        return loc, f"{_show(value)} {simple[kind]}"
    bounds = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
              "less_than_equal": ("le", "<=")}
    if kind in bounds:
        key, sign = bounds[kind]
        return loc, f"{_show(value)} is out of range; accepted: {sign} {ctx[key]}"
    if kind == "too_short":
        return loc, f"{value!r} has {ctx.get('actual_length')} items; accepted: at least {ctx.get('min_length')}"
    if kind == "too_long":
        return loc, f"{value!r} has {ctx.get('actual_length')} items; accepted: at most {ctx.get('max_length')}"
    return loc, f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {_show(value)}"


def describe_validation_error(err, layers=()):
    """Turn a pydantic ValidationError of a Recipe into one line: `FILE: DOTTED.FIELD: problem; accepted`."""
    first = err.errors()[0]
    loc, holder, tp = _walk(first["loc"])
    loc, message = _describe(first, loc, holder, tp)
    label = "<recipe>"
    for depth in range(len(loc), -1, -1):
        layer = next((layer for layer in reversed(layers) if layer.covers(loc[:depth])), None)
        if layer is not None:
            label = layer.label
            break
    where = f"{_dotted(loc)}: " if loc else ""
    return f"{label}: {where}{message}"


def validate_recipe(data, source=None, augmentations=None):
    """Validate a recipe mapping into a Recipe; errors become one RecipeError line naming `source`."""
    layers = [_Layer(str(source or "<recipe>"), Path.cwd(), data)]
    return _validate(data, layers, augmentations)


def _validate(data, layers, augmentations=None):
    """Recipe.model_validate, with a failure turned into one RecipeError line blaming the right layer."""
    context = {"augmentations": augmentations} if augmentations is not None else None
    try:
        return Recipe.model_validate(data, context=context)
    except ValidationError as err:
        raise RecipeError(describe_validation_error(err, layers)) from None


def load_recipe(path, overrides=(), augmentations=None):
    """Read, inherit, override and validate a recipe file into a Recipe (RecipeError on any problem).

    Args:
        path: the recipe's YAML file.
        overrides: `--set` items such as "train.epochs=3" or "export.formats=[onnx,tflite]"; each value is
            parsed as YAML, so numbers, booleans, lists and null keep their types.
        augmentations: the augmentation table to check names against (default: convforge.data.augment's).

    Examples:
        >>> recipe = load_recipe("recipes/classification/resnet18_shapes.yaml", ["train.epochs=1"])
        >>> recipe.train.epochs, recipe.model.architecture
        (1, 'resnet18')
    """
    layers = _read_chain(path)
    tree = {}
    for layer in layers:
        tree = _merge(tree, layer.data)
    for item in overrides:
        keys, value = _parse_override(item)
        _apply_override(tree, keys, copy.deepcopy(value), item)
        layers.append(_Layer(f"--set {item}", Path.cwd(), keys=keys))
    _resolve_paths(tree, layers)
    recipe = _validate(tree, layers, augmentations)
    recipe._source_path = Path(path).absolute()
    recipe._bases = tuple(layer.path for layer in reversed(layers) if layer.path is not None)[1:]
    return recipe


def recipe_json_schema():
    """The JSON schema of a recipe, for editors that complete and check YAML (`convforge recipe-schema`)."""
    return Recipe.model_json_schema()
