"""Atomic file writes: a reader (or a crash) never sees half a file, because it appears only by a rename."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def replacing(path, mode="w"):
    """Open a temporary file beside `path` for writing; on success it is renamed to `path`, else removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        # mkstemp makes the file 0600; the result is an ordinary file, readable as the umask allows (0644).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path, text):
    """Write text to `path` atomically."""
    with replacing(path) as f:
        f.write(text)


def write_json(path, value, indent=1):
    """Write a JSON document to `path` atomically."""
    import json

    write_text(path, json.dumps(value, indent=indent) + "\n")


@contextlib.contextmanager
def filling(folder, what="output folder"):
    """Create `folder` (and its missing parents) for a block that writes files into it, each atomically; if the
    block fails, the folders created here are removed again while empty, so a failed command leaves nothing
    behind. A path that cannot be such a folder raises ConvforgeError naming it."""
    from convforge.errors import ConvforgeError

    folder = os.path.abspath(os.fspath(folder))
    created, probe = [], folder
    while not os.path.exists(probe):
        created.append(probe)  # deepest first, the order they are removed in
        probe = os.path.dirname(probe)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        _remove_empty(created)
        raise ConvforgeError(f"{what} {folder} cannot be created ({err.strerror}); accepted: a folder path that is "
                             f"not a file or inside one, where this user can write") from None
    # Checked before the block's work, not discovered after it when its files are written.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConvforgeError(f"{what} {folder} is not writable by this user; accepted: a folder this user can "
                             f"write")
    try:
        yield folder
    except BaseException:
        _remove_empty(created)
        raise


def _remove_empty(folders):
    """Remove each of these folders that exists and is empty, deepest first."""
    for path in folders:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            continue  # never made: creation stopped above it
        except OSError:
            break  # not empty: neither are its parents
