"""The inputs of a batch: the files of a folder or glob, or the arrays of a Zarr group, keyed.

An input's key (its name in the manifest, and its result's folder ``results/<key>/``) is its path
relative to the folder the input names, after the glob is normalised lexically
(``os.path.normpath``: ``/data/b[34]/../../imgs/*.png`` is ``/imgs/*.png``) and before any
wildcard; or the array's name in the Zarr group. A key is therefore never absolute and never
starts with ``..``: a result cannot leave ``results/``. One file is one input however the glob
spells its path (matches are deduplicated by their real path, keeping the first key).
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from daskgmm import ngff, storage, store
from daskgmm.config import ConfigError
from daskgmm.guard import real_path

from .input_paths import batch_input_format, image_files

_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch: an image file, one array of a Zarr group, or one field of an
    OME-Zarr plate or well.

    Attributes
    ----------
    name : str
        The input's key, unique within the batch: the file's path relative to the folder (or
        the normalised glob's fixed part), or the array's name.
    path : str
        The image file, or the Zarr group.
    array : str or None
        The array (or field image) of the group; None for a file.
    identity : dict
        ``size`` and ``mtime_ns`` (identity ``stat``) or ``sha256`` (identity ``content``).
    field : bool
        Whether ``array`` is an OME-Zarr field image (read by its metadata).
    """

    name: str
    path: str
    array: str | None
    identity: dict
    field: bool = False

    @property
    def location(self):
        """The file, or the array's (or field's) folder in the group."""
        return self.path if self.array is None else storage.join(self.path, self.array)


def list_inputs(config, identity, key="input"):
    """Return the inputs at ``config.path`` now, sorted by key, each with its identity.

    Nothing is opened: a damaged input is listed (and found when it is checked).

    Parameters
    ----------
    config : InputConfig
    identity : {'stat', 'content'}
    key : str
        The section's dotted path, for messages.

    Raises
    ------
    ConfigError
        If the folder or Zarr group does not exist, or ``path`` holds a Zarr array.
    """
    kind = batch_input_format(config, key)
    if kind == "zarr":
        located = _group_arrays(config.path, key)
    elif kind == "hcs":
        located = _plate_fields(config.path, key)
    else:
        located = _keyed_image_files(config.path, key)
    return [BatchInput(name, path, array,
                       _identity(storage.join(path, array) if array else path, identity),
                       field=kind == "hcs")
            for name, path, array in located]


def _plate_fields(path, key):
    """The field images of an OME-Zarr plate (keyed ``A/1/0``: row, column, field) or well."""
    try:
        fields = ngff.plate_fields(path, storage.storage_options(path))
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.path") from None
    return [(name, path, name) for name, _ in fields]


def _group_arrays(path, key):
    if not (storage.exists(path) if storage.is_url(path) else Path(path).is_dir()):
        raise ConfigError(f"no Zarr group at {path!r}", f"{key}.path")
    try:
        names = store.group_array_names(path)
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.path") from None
    return [(name, path, name) for name in names]


def _keyed_image_files(path, key):
    """The image files, keyed by their path relative to the folder (or the glob's fixed part);
    a file the glob spells twice (by its real path) keeps its first key."""
    root, files = image_files(path, key)
    if storage.is_url(path):  # an object has one name: no links to resolve
        prefix = str(root).rstrip("/") + "/"
        return sorted((file[len(prefix):], file, None) for file in files)
    keyed = {}
    for file in files:
        keyed.setdefault(real_path(file), (file.relative_to(root).as_posix(), str(file), None))
    return sorted(keyed.values())


def _identity(path, kind):
    """An input's identity: its size and latest modification time, or a hash of its bytes."""
    if storage.is_url(path):
        return storage.identity(path, kind, _HASH_BLOCK)
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if kind == "content":
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            with open(file, "rb") as stream:
                for block in iter(lambda: stream.read(_HASH_BLOCK), b""):
                    digest.update(block)
        return {"sha256": digest.hexdigest()}
    stats = [file.stat() for file in files]
    return {"size": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
