"""Atomic folders: a folder is built in a staging folder and swapped in only when complete.

Staging folders are named ``.daskgmm-staging-<random>`` (a name only daskgmm makes, of fixed
length whatever the target's name) and hold a marker naming their kind, their target and the
process writing them, so a later job can tell its own dead leftovers from anything else and
remove them (:func:`remove_dead_staging`). A staging folder is born with its marker: it is made
as a draft, ``.daskgmm-draft-<host>-<pid>-<random>``, whose name says whose it is, and renamed
once marked; a job killed at any moment so leaves nothing a later job cannot attribute.
"""

import ctypes
import errno as _errno
import hashlib
import os
import re
import socket
import shutil
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

from . import object_output, object_record
from .storage import is_url
from .ownership import (
    MARKER,
    foreign_entries,
    is_dead_staging,
    process_is_gone,
    read_marker,
    remove_owned,
    write_marker,
)

STAGING_PREFIX = ".daskgmm-staging-"
RETIRED_PREFIX = ".daskgmm-retired-"
DRAFT_PREFIX = ".daskgmm-draft-"
# Seconds after which another host's draft (whose process cannot be asked) is taken as dead.
MARKER_GRACE = 60
_DRAFT_NAME = re.compile(re.escape(DRAFT_PREFIX)
                         + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{32}")
_MARKER_FILE = re.compile(re.escape(MARKER) + r"(\.\d+)?")  # the marker or one being written
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths in one step


def _exchange_directories(first, second):
    """Swap two existing directories in one atomic step; return False where that is unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd = -100
    result = renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (_errno.EINVAL, _errno.ENOSYS, _errno.ENOTSUP):
        return False
    raise OSError(errno, os.strerror(errno), str(first))


def folder_exists(path):
    """Whether there is a folder at ``path``, local or in object storage (there, a record that
    committed nothing is none)."""
    return object_record.holds(path) if is_url(path) else os.path.lexists(path)


def _host_tag(host=None):
    """A fixed-length tag of a host's name, for the names of drafts."""
    return hashlib.sha256((host or socket.gethostname()).encode()).hexdigest()[:8]


def new_staging(parent, kind, target):
    """Create and return an empty staging folder in ``parent`` for ``target`` (a path's name),
    its marker already in it."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    draft = parent / f"{DRAFT_PREFIX}{_host_tag()}-{os.getpid()}-{name}"
    draft.mkdir()
    write_marker(draft, kind, target, complete=False)
    staging = parent / f"{STAGING_PREFIX}{name}"
    os.rename(draft, staging)
    return staging


def holds_only_markers(folder):
    """Whether ``folder`` holds nothing but a marker or markers being written (or nothing)."""
    try:
        return all(_MARKER_FILE.fullmatch(child.name) and child.is_file()
                   and not child.is_symlink() for child in Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def is_dead_draft(folder, stale_after=MARKER_GRACE):
    """Whether ``folder`` is a draft of :func:`new_staging` whose process died before renaming
    it (on another host: one unchanged for ``stale_after`` seconds)."""
    folder = Path(folder)
    match = _DRAFT_NAME.fullmatch(folder.name)
    if match is None or folder.is_symlink() or not holds_only_markers(folder):
        return False
    if match["host"] == _host_tag():
        return process_is_gone(socket.gethostname(), int(match["pid"]))
    try:
        return time.time() - folder.stat().st_mtime > stale_after
    except FileNotFoundError:
        return False


def is_unborn_staging(folder):
    """Whether ``folder`` is a staging folder with no marker that holds nothing: the remains
    of one whose removal was cut short (or, from earlier versions, whose marker never came).
    Nobody writes into such a folder any more, so it may go at once."""
    folder = Path(folder)
    return (folder.name.startswith(STAGING_PREFIX) and not folder.is_symlink()
            and read_marker(folder) is None and holds_only_markers(folder))


def commit(staging, path, kind):
    """Seal ``staging`` (list what it holds in its marker) and swap it in at ``path``.

    Readers see the old folder or the new one, never neither: on Linux the two are exchanged
    in one step; elsewhere the old one is moved aside first, and a job killed between the two
    renames leaves it as a ``.daskgmm-retired-`` sibling, which :func:`remove_dead_staging`
    deletes only once ``path`` is back.
    """
    path = Path(path)
    write_marker(staging, kind, path.name, complete=True)
    if not os.path.lexists(path):
        os.replace(staging, path)
    elif _exchange_directories(staging, path):
        with suppress(FileNotFoundError):  # another job may take the old folder for garbage
            remove_owned(staging)  # the old folder now
    else:
        retired = path.with_name(f"{RETIRED_PREFIX}{uuid.uuid4().hex}")
        os.replace(path, retired)
        os.replace(staging, path)
        remove_owned(retired)


@contextmanager
def atomic_directory(path, kind, staging_parent=None):
    """Yield a staging folder that replaces ``path`` only if the block succeeds.

    ``path`` must have been cleared by :meth:`daskgmm.guard.Guard.check` (a real path: links
    resolved). A failing block leaves nothing behind; a killed one leaves a staging folder that
    a later job removes. For a URL, what is yielded is the root of a new generation of the
    folder (a :class:`zarr.storage.StorePath`, see :func:`daskgmm.object_output.replacing`).

    Parameters
    ----------
    path : Path
    kind : str
        What the folder is, recorded in its marker.
    staging_parent : Path, optional
        Where to build it; beside ``path`` when None (it must be on the same file system).
    """
    if is_url(path):
        with object_output.replacing(path, kind) as generation:
            yield generation.root
        return
    path = Path(path)
    staging = new_staging(staging_parent or path.parent, kind, path.name)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit(staging, path, kind)


def remove_dead_staging(parent, kind, target=None, stale_after=None):
    """Delete the staging folders in ``parent`` that dead jobs left while writing ``target``.

    Only folders with a staging name and a staging marker of ``kind`` whose process is gone
    (or, on another host, older than ``stale_after`` seconds) are deleted: a job writing the
    same path at the same time keeps its own. Returns how many were deleted.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return 0
    removed = 0
    for folder in parent.glob(f"{STAGING_PREFIX}*"):
        if folder.is_dir() and not folder.is_symlink() and (
                is_dead_staging(folder, kind, target, stale_after) or is_unborn_staging(folder)):
            with suppress(FileNotFoundError):  # another job removed it first
                remove_owned(folder)
            removed += 1
    for folder in parent.glob(f"{DRAFT_PREFIX}*"):
        if is_dead_draft(folder):
            with suppress(FileNotFoundError):
                remove_owned(folder)
            removed += 1
    for folder in parent.glob(f"{RETIRED_PREFIX}*"):
        if _is_retired_copy(folder, kind, target):
            remove_owned(folder)
            removed += 1
    return removed


def _is_retired_copy(folder, kind, target):
    """A folder moved aside by :func:`commit` whose replacement is now in place."""
    marker = read_marker(folder)
    if marker is None or marker["kind"] != kind or (target and marker["target"] != target):
        return False
    return (folder.parent / marker["target"]).is_dir() and not foreign_entries(folder, kind)
