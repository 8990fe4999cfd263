"""A trained model's .keras file, read safely: checked for what it claims to hold before Keras opens it, loaded
in safe mode with convforge's custom layers registered, as trained or as its float32 copy."""
from convforge.errors import ModelError

PRECISIONS = ("trained", "float32")
# A .keras archive's config.json describes layers, not weights: megabytes at most. Anything past these bounds
# is a zip bomb or not a model, and is refused before Keras inflates it.
MAX_CONFIG_BYTES = 64 * 2 ** 20
MAX_ARCHIVE_RATIO = 200


def check_keras_file(path):
    """Raise ModelError unless `path` is an existing .keras zip whose declared sizes are sane (no zip bomb)."""
    import os
    import zipfile

    path = str(path)
    if not os.path.isfile(path):
        raise ModelError(f"model file {path!r} does not exist; accepted: a .keras file (a run's model.keras)")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelError(f"model file {path!r} is not a .keras archive ({error}); accepted: a .keras file saved "
                         f"by Keras 3") from None
    if "config.json" not in entries:
        raise ModelError(f"model file {path!r} has no config.json; accepted: a .keras file saved by Keras 3")
    declared = sum(info.file_size for info in entries.values())
    if entries["config.json"].file_size > MAX_CONFIG_BYTES or declared > MAX_ARCHIVE_RATIO * os.path.getsize(path):
        raise ModelError(f"model file {path!r} declares {declared / 2 ** 20:.0f} MiB inflated from "
                         f"{os.path.getsize(path) / 2 ** 20:.1f} MiB (config.json "
                         f"{entries['config.json'].file_size / 2 ** 20:.0f} MiB); refused as a zip bomb; accepted: a "
                         f".keras file saved by Keras 3")


def load_model(path, precision="trained"):
    """Load a trained .keras model (no compile state), as trained or as its float32 copy (what exports compute).

    Convforge's custom layers are registered first. precision="float32" turns a mixed_bfloat16/mixed_float16
    model into the same model computing in float32 with the same weights (a float32 model is returned as is).
    """
    import keras

    # Importing the layer and head modules runs their register_keras_serializable decorators (BoxOrder, LRN,
    # ImageFilter ...); without them a localization model cannot be read back in a fresh process.
    import convforge.heads  # noqa: F401
    import convforge.layers  # noqa: F401

    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r} is not accepted; accepted: {', '.join(PRECISIONS)}")
    check_keras_file(path)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises ValueError, TypeError, KeyError, OSError ... for a bad archive
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ModelError(f"model file {str(path)!r} could not be loaded ({type(error).__name__}: {first[:200]}); "
                         f"accepted: a .keras file saved by Keras 3 whose layers are Keras' or convforge's "
                         f"(no Lambda layers: safe mode refuses code in a model file)") from None
    if precision == "float32":
        from convforge.precision import float32_copy

        model = float32_copy(model)
    return model
