"""What an input's path names: its format (told from the path unless configured) and its files.

The one place both kinds of job tell formats apart and list files: a single job
(:mod:`.inputs`: a Zarr store or URL, image files, CSV or Parquet files) and the batch mode of
the segment job (:mod:`.batch_inputs`: a local folder or glob of image files, or a Zarr group).
"""

import glob
import os
from pathlib import Path

from daskgmm import ngff, storage
from daskgmm.config import ConfigError
from daskgmm.guard import glob_root
from daskgmm.images import IMAGE_SUFFIXES
from daskgmm.storage import is_url, storage_options
from daskgmm.store import is_zarr_store
from daskgmm.tables import TABLE_SUFFIXES


def is_zarr_path(path):
    """Whether ``path`` names a Zarr store: a name ending in ``.zarr``, or a folder (or URL
    prefix) holding Zarr metadata."""
    return path.rstrip("/").endswith(".zarr") or is_zarr_store(path)


def input_format(config, key):
    """Return the format of a job's input: as configured, or told from its path.

    Parameters
    ----------
    config : InputConfig
    key : str
        The section's dotted path, for messages.

    Returns
    -------
    {'zarr', 'ome-zarr', 'xarray', 'images', 'csv', 'parquet'}

    Raises
    ------
    ConfigError
        If nothing is at the path, or its name tells no format.
    """
    if config.format != "auto":
        return config.format
    if is_zarr_path(config.path):
        return _zarr_format(config, key)
    if not glob.has_magic(config.path) and _listed(config.path) is not None:
        return "images"  # a folder
    return _format_of_files(config.path, key)


def _zarr_format(config, key):
    """``ome-zarr`` for a store with OME-NGFF metadata, ``xarray`` when a variable or feature
    dim is named, else ``zarr``.

    Raises
    ------
    ConfigError
        For an HCS plate or well outside batch mode.
    """
    if config.variable is not None or config.feature_dim is not None:
        return "xarray"
    if config.array is None and _ngff_version(config.path):
        if ngff.is_hcs(config.path, storage_options(config.path)):
            raise ConfigError(f"{config.path!r} is an OME-Zarr plate or well: its fields are a "
                              "batch; add a batch section (batch: {})", f"{key}.path")
        return "ome-zarr"
    return "zarr"


def _ngff_version(path):
    """The NGFF version of a Zarr store, None if it has none or refuses the read (opening it
    as Zarr then says why, naming the credentials found)."""
    try:
        return ngff.ngff_version(path, storage_options(path))
    except PermissionError:
        return None


def _format_of_files(path, key):
    """The format of a file, or of a glob's first match, told from its suffix."""
    if glob.has_magic(path):
        matches = sorted(_listed(path)[1])
    else:
        matches = [path] if _exists(path) else []
    if not matches:
        raise ConfigError(f"no such file, folder or Zarr store: {path!r}", f"{key}.path")
    suffix = Path(matches[0]).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "images"
    if suffix in TABLE_SUFFIXES:
        return TABLE_SUFFIXES[suffix]
    raise ConfigError(f"cannot tell the format of {path!r} from its name; set {key}.format to "
                      "zarr, images, csv or parquet", f"{key}.format")


def batch_input_format(config, key="input"):
    """Return ``'zarr'`` (a group whose arrays are the inputs), ``'hcs'`` (an OME-Zarr plate or
    well, whose fields are) or ``'images'`` (a folder/glob).

    Parameters are those of :func:`input_format`.

    Raises
    ------
    ConfigError
        For a table format, or an OME-Zarr input that is no plate or well.
    """
    if config.format in ("zarr", "images"):
        return config.format
    if config.format not in ("auto", "ome-zarr"):
        raise ConfigError(f"batch mode reads image files, a Zarr group or an OME-Zarr plate, "
                          f"not {config.format}", f"{key}.format")
    if not is_zarr_path(config.path):
        return "images"
    if ngff.is_hcs(config.path, storage_options(config.path)):
        return "hcs"
    if config.format == "ome-zarr":
        raise ConfigError(f"{config.path!r} is no OME-Zarr plate or well; batch mode reads "
                          "the fields of one", f"{key}.path")
    return "zarr"


def _exists(path):
    return storage.exists(path) if is_url(path) else Path(path).exists()


def _listed(pattern, recursive=False):
    """The folder a glob or folder lists from and the paths it lists; None when it is neither.

    A URL's glob or prefix is listed by its filesystem (its folder is then the URL itself)."""
    if is_url(pattern):
        found = storage.listing(pattern)
        return None if found is None else (pattern, found)
    if glob.has_magic(pattern):
        return glob_root(pattern), glob.glob(pattern, recursive=recursive)
    if Path(pattern).is_dir():
        return Path(pattern), [str(child) for child in Path(pattern).iterdir()]
    return None


def input_files(path, key, suffixes, what):
    """Return the files a job's input names, sorted.

    A glob's matches, the files of a folder with one of ``suffixes``, or the one file.

    Parameters
    ----------
    path : str
    key : str
        The section's dotted path, for messages.
    suffixes : tuple of str
        Lowercase suffixes of the files a folder is read for.
    what : str
        The kind of file, for messages (``PNG/JPEG/TIFF``).

    Raises
    ------
    ConfigError
        If there is no such file.
    """
    listed = _listed(path)
    if listed is None:
        files = [path] if _exists(path) else []
    else:
        files = sorted(name for name in listed[1]
                       if glob.has_magic(path) or Path(name).suffix.lower() in suffixes)
    if not files:
        raise ConfigError(f"no {what} files at {path!r}", f"{key}.path")
    return files


def image_files(path, key):
    """Return the folder a batch's images are keyed from, and its image files, sorted.

    The glob is normalised lexically first (``os.path.normpath``) and matches recursively;
    only files with an image suffix are kept.

    Parameters
    ----------
    path : str
        A folder, or a glob of files.
    key : str
        The section's dotted path, for messages.

    Returns
    -------
    root : Path
        The folder, or the glob's fixed part.
    files : list of Path

    Raises
    ------
    ConfigError
        If ``path`` is neither a folder nor a glob.
    """
    if is_url(path):
        return _url_image_files(path, key)
    listed = _listed(os.path.normpath(path), recursive=True)
    if listed is None:
        raise ConfigError(f"no such folder: {path!r} (batch mode reads a folder or glob of "
                          "images, or a Zarr group)", f"{key}.path")
    root, found = listed
    files = sorted(Path(name) for name in found)
    return root, [file for file in files if file.suffix.lower() in IMAGE_SUFFIXES
                  and file.is_file()]


def _url_image_files(url, key):
    """:func:`image_files` of a URL: a glob's matches, or every object under a prefix, keyed
    from the glob's fixed part or the prefix."""
    if glob.has_magic(url):
        root = url[:min(url.index(c) for c in "*?[" if c in url)].rsplit("/", 1)[0]
        found = storage.listing(url) or []
    else:
        root = url.rstrip("/")
        found = storage.files_under(url) if storage.exists(url) else None
    if found is None:
        raise ConfigError(f"nothing at {url!r} (batch mode reads a prefix or glob of images, "
                          "or a Zarr group)", f"{key}.path")
    return root, [name for name in found if Path(name).suffix.lower() in IMAGE_SUFFIXES]
