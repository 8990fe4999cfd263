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
