"""image_folder: one sub-folder per class, as in ImageNet-style folders and image_dataset_from_directory."""
import os

from convforge.data.records import IMAGE_EXTENSIONS, Skips, inspect_images, require_path
from convforge.errors import DataError


def image_folder(path, strict=False):
    """Load `path/<class>/.../<image>` with one sub-folder per class; sorted folder names are the classes.

    Images are files ending in .jpg, .jpeg, .png, .bmp or .gif (any case), searched recursively inside each
    class folder; other files are ignored. Files whose real location lies outside `path` (symlinks out of the
    dataset) and unreadable images are skipped with one warning, or raise DataError when `strict`.

    Examples:
        >>> records = image_folder("flowers/train")        # doctest: +SKIP
        >>> records.class_names[:2], records[0]["label"]   # doctest: +SKIP
        (['daisy', 'rose'], 0)
    """
    source = f"image_folder({path})"
    root = require_path(path, "folder", source)
    if not os.path.isdir(root):
        raise DataError(f"{root} of {source} is a file; pass a folder with one sub-folder per class")
    class_names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not class_names:
        raise DataError(f"folder {root} has no class sub-folders; expected one sub-folder per class, "
                        f"e.g. {root}/cat/1.jpg")
    real_root = os.path.realpath(root)
    skips = Skips(source, strict)
    candidates = []
    for label, name in enumerate(class_names):
        for folder, dirs, files in os.walk(os.path.join(root, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                if file.startswith(".") or not file.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path_ = os.path.join(folder, file)
                real = os.path.realpath(path_)
                if os.path.commonpath([real_root, real]) != real_root:
                    skips.add(path_, "links to a file outside the dataset folder")
                    continue
                candidates.append((real, label))
    records = []
    for (path_, label), size in zip(candidates, inspect_images(p for p, _ in candidates)):
        if isinstance(size, str):
            skips.add(path_, size)
            continue
        records.append({"image_path": path_, "width": size[0], "height": size[1], "label": label,
                        "objects": []})
    return skips.finish(records, class_names)
