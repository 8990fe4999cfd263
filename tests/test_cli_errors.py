"""No traceback reaches a user: every subcommand, given bad arguments or hostile files, prints one line and
exits 2, writing nothing; and a bare .keras model exports all six formats with --calibration."""
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convforge
from convforge.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "recipes" / "classification" / "lenet5_digits.yaml"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A folder of bad inputs: random bytes, half a zip, a zip bomb, a non-UTF-8 recipe, broken export folders."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "random.keras").write_bytes(np.random.default_rng(0).bytes(4096))
    model = convforge.build_model("lenet5", num_classes=3, input_shape=(32, 32, 1))
    model.save(root / "good.keras")
    (root / "half.keras").write_bytes((root / "good.keras").read_bytes()[:2000])
    with zipfile.ZipFile(root / "bomb.keras", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", b"{" + b" " * (80 * 2 ** 20) + b"}")  # 80 MiB of spaces, ~80 KiB packed
    (root / "binary.yaml").write_bytes(b"name: x\n\xff\xfe\x00bad")
    Image.new("RGB", (8, 8)).save(root / "image.png")
    (root / "notimage.png").write_bytes(b"not a png")
    card_missing = root / "card_missing"
    card_missing.mkdir()
    (card_missing / "card.json").write_text(json.dumps({"model": {}, "artifacts": []}))
    escape = root / "escape"
    escape.mkdir()
    card = {"model": {}, "input": {"shape": [None, 32, 32, 1]}, "outputs": [{"name": "probabilities"}],
            "verification": {"max_abs_diff": 1e-4},
            "artifacts": [{"format": "onnx", "file": "../../etc/passwd", "sha256": "0"}]}
    (escape / "card.json").write_text(json.dumps(card))
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "card.json").write_text(json.dumps({**card, "artifacts": []}))
    np.save(pickled / "check_images.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return root


BAD_COMMANDS = [
    (["nonsense"], "invalid choice"),
    (["models", "zzz*"], "no registered model matches"),
    (["summary", "resnet51"], "did you mean 'resnet50'"),
    (["summary", "resnet18", "--input-shape", "1,2"], "HEIGHT,WIDTH,CHANNELS"),
    (["filters", "{root}/missing.png"], "missing.png"),
    (["check", "{root}/missing.yaml"], "recipe file not found"),
    (["check", "{root}/binary.yaml"], "binary.yaml"),
    (["data", "shapes", "{root}/out_shapes", "--objects", "a,b"], "MIN,MAX"),
    (["data", "shapes", "{root}/out_shapes", "--objects", "1,2,3"], "MIN,MAX"),
    (["data", "to-tfrecord", "{root}/missing_dataset", "{root}/tfr"], "missing_dataset"),
    (["train", "{root}/missing.yaml"], "recipe file not found"),
    (["evaluate", str(DIGITS), "--weights", "{root}/random.keras"], "is not a .keras archive"),
    (["evaluate", "{root}/no_such_run", "--out", "{root}/out_eval"], "is not a recipe (.yaml), a run folder"),
    (["evaluate", str(DIGITS), "--weights", "{root}/good.keras", "--out", "{root}/image.png/eval"],
     "cannot be created"),
    (["predict", "{root}/random.keras", "{root}/image.png"], "is not a .keras archive"),
    (["predict", "{root}/half.keras", "{root}/image.png"], "half.keras"),
    (["predict", "{root}/bomb.keras", "{root}/image.png"], "zip bomb"),
    (["predict", "{root}/good.keras", "{root}/notimage.png"], "could not be read"),
    (["predict", "{root}/good.keras", "{root}/image.png", "{root}/missing.png", "--out", "{root}/out_predict"],
     "missing.png' could not be read"),
    (["predict", "{root}/good.keras", "{root}/image.png", "--out", "{root}/image.png/drawn"], "cannot be created"),
    (["export", "{root}/random.keras", "--out", "{root}/out_export"], "is not a .keras archive"),
    (["export", "{root}/good.keras", "--out", "{root}/out_export"], "tflite_int8 needs calibration images"),
    (["export", "{root}/good.keras", "--calibration", "{root}/nowhere", "--out", "{root}/out_export"],
     "calibration path"),
    (["verify", "{root}/card_missing"], "input is missing"),
    (["verify", "{root}/escape"], "artifacts[0] is not an artifact entry"),
    (["verify", "{root}/pickled"], "is not a numpy array file"),
    (["bench", "{root}/nowhere"], "does not exist"),
    (["compare", "--models", "zzz", "--out", "{root}/out_compare"], "zzz"),
]


@pytest.mark.parametrize("argv, message", BAD_COMMANDS, ids=[" ".join(a[:2]) for a, _ in BAD_COMMANDS])
def test_every_subcommand_fails_in_one_line_with_exit_2(argv, message, hostile, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _listing(hostile)
    argv = [a.replace("{root}", str(hostile)) for a in argv]
    try:
        code = cli_main(argv)
    except SystemExit as exit_:  # argparse's own exit, through _Parser.error
        code = exit_.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert _listing(hostile) == before and _listing(tmp_path) == []


def test_a_bare_keras_model_exports_all_six_formats_with_calibration(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = convforge.build_model("lenet5", num_classes=3, input_shape=(32, 32, 1))
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(12):
        pixels = rng.integers(0, 256, (40 + i, 36, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "imgs" / ("sub" if i % 2 else "") / f"{i}.png")
    assert cli_main(["export", "m.keras", "--calibration", "imgs", "--out", "out"]) == 0
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert {a["format"] for a in card["artifacts"]} == set(convforge.export.FORMATS)
    assert card["options"]["representative_images"] == 12
    assert {a["check"]["status"] for a in card["artifacts"]} <= {"passed", "reported"}
    assert "normalized as pixels / 255" in capsys.readouterr().out
    # An .npy of inputs normalized by the user serves as well.
    np.save(tmp_path / "inputs.npy", rng.standard_normal((8, 32, 32, 1)).astype("float32"))
    assert cli_main(["export", "m.keras", "--calibration", "inputs.npy", "--formats", "tflite_int8",
                     "--out", "out_npy"]) == 0
    assert json.loads((tmp_path / "out_npy" / "card.json").read_text())["options"]["representative_images"] == 8


def _png_claiming(path, width, height):
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("case", ["bomb_png", "out_is_file", "out_under_file", "clipnorm_mapping",
                                  "alias_bomb", "huge_recipe", "empty_folder_run"])
def test_hostile_inputs_of_the_probe_fail_in_one_line(case, hostile, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = str(hostile / "good.keras")
    if case == "bomb_png":
        _png_claiming(tmp_path / "bomb.png", 60000, 60000)
        argv, message = ["predict", good, "bomb.png"], "could not be read"
        from convforge.data.records import inspect_image

        assert "DecompressionBomb" in inspect_image(tmp_path / "bomb.png")  # sources skip and count it
    elif case == "out_is_file":
        (tmp_path / "taken").write_text("a file")
        argv, message = ["export", good, "--formats", "onnx", "--out", "taken"], "cannot write into"
    elif case == "out_under_file":
        (tmp_path / "taken").write_text("a file")
        argv, message = ["export", good, "--formats", "onnx", "--out", "taken/sub"], "cannot write into"
    elif case == "clipnorm_mapping":
        argv, message = ["check", str(DIGITS), "--set", "train.optimizer.clipnorm={a: 1}"], "clipnorm"
    elif case == "alias_bomb":
        laughs = "{" + ", ".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9))
        laughs = "{l0: &l0 [lol], " + laughs[1:] + "}"
        argv, message = ["check", str(DIGITS), "--set", f"train.optimizer.clipnorm={laughs}"], "expands to more than"
    elif case == "huge_recipe":
        (tmp_path / "huge.yaml").write_text("name: x\n" + "# padding\n" * 500_000)
        argv, message = ["check", "huge.yaml"], "is not a recipe"
    else:
        (tmp_path / "empty").mkdir()
        argv = ["train", str(DIGITS), "--set", "data.train={source: image_folder, path: empty}", "--set",
                "data.val=null", "--set", "model.num_classes=2"]
        message = "empty"
    before = _listing(tmp_path)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert _listing(tmp_path) == before  # no half-written export, no empty run folder


def test_cards_are_ordinary_readable_files(tmp_path):
    model = convforge.build_model("lenet5", num_classes=3, input_shape=(32, 32, 1))
    convforge.export(model, tmp_path / "out", formats=["onnx"], progress=None)
    for name in ("card.json", "card.md"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_errors_name_the_artifact_and_the_disk(tmp_path, monkeypatch):
    """A failed check names the format the user asked for (not the staging folder), and a full disk is said to
    be a full disk, not a model the converter cannot hold."""
    import errno

    from convforge.errors import ExportError

    model = convforge.build_model("lenet5", num_classes=3, input_shape=(32, 32, 1))
    with pytest.raises(ExportError, match=r"^saved_model differs from Keras") as failed:
        convforge.export(model, tmp_path / "strict", formats=["saved_model"], max_abs_diff=-1.0, progress=None)
    assert "core_saved_model" not in str(failed.value)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    import sys

    monkeypatch.setattr(sys.modules["convforge.export"], "write_card", full_disk)
    with pytest.raises(ExportError, match="No space left on device.*free space"):
        convforge.export(model, tmp_path / "full", formats=["onnx"], progress=None)
    assert not (tmp_path / "full").exists()
