"""What dead runs left in a batch store: staging folders and earlier versions' temporary names.

A writer is dead when its process is gone; a process of another host cannot be asked, so there
it is dead once it has been silent for ``batch.claim_timeout`` seconds. A staging folder (or
its draft) is its writer's while the process its marker (or name) names lives; a sealed one
swapped out by a later writer is dead too once it has not changed for ``claim_timeout``
seconds, and an unmarked one holding nothing (its removal cut short) is dead at once. The
temporary names of earlier versions are matched by strict patterns and deleted when their
process is gone: the manifest's ``.manifest.json.<8 hex>`` (written only under the lock, so
dead when its holder finds it), ``.lock.stale-<8 hex>`` (a stale lock moved aside; dead when
unchanged for ``lock_timeout``) and ``results/**/.<name>.incomplete-<host>-<pid>-<8 hex>`` /
``.replaced-`` (never an input's result).
"""

import re
import shutil
import socket
import time

from daskgmm import atomic
from daskgmm.ownership import MARKER, is_dead_staging, process_is_gone, read_marker, remove_owned

from .batch_layout import RESULTS

_STAGING_NAME = re.compile(re.escape(atomic.STAGING_PREFIX) + "[0-9a-f]{32}")
_OLD_MANIFEST = re.compile(r"\.manifest\.json\.[0-9a-f]{8}")
_OLD_LOCK = re.compile(r"\.lock\.stale-[0-9a-f]{8}")
_OLD_STAGING = re.compile(r"\.(?P<target>.+)\.(?P<what>incomplete|replaced)-(?P<host>.+)-"
                          r"(?P<pid>\d+)-[0-9a-f]{8}")


def _unchanged_for(path, seconds):
    try:
        return time.time() - path.stat().st_ctime > seconds
    except FileNotFoundError:
        return False


def is_old_temporary(path):
    """Whether ``path`` is a file an earlier version left at the store's top, dead or not: a
    manifest being written (``.manifest.json.<8 hex>``) or a stale lock moved aside."""
    old = _OLD_MANIFEST.fullmatch(path.name) or _OLD_LOCK.fullmatch(path.name)
    return old is not None and path.is_file()


def dead_staging(staging, stale_after):
    """Return the staging folders in ``staging`` whose writers have died.

    Parameters
    ----------
    staging : Path
        The store's ``.staging/``.
    stale_after : float
        Seconds after which another host's folder, or a sealed one, unchanged, is dead.
    """
    if not staging.is_dir():
        return []
    return [folder for folder in sorted(staging.iterdir()) if _is_dead(folder, stale_after)]


def _is_dead(folder, stale_after):
    if atomic.is_dead_draft(folder, stale_after) or atomic.is_unborn_staging(folder):
        return True
    if not _STAGING_NAME.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
        return False
    marker = read_marker(folder)
    if marker is None:  # not daskgmm's way of leaving it: only what changes no more is dead
        return _unchanged_for(folder, stale_after)
    return is_dead_staging(folder, marker["kind"], stale_after=stale_after) or (
        "entries" in marker and _unchanged_for(folder, stale_after))


def old_leftovers(root, keep, lock_timeout, stale_after):
    """Return the temporary files and folders earlier versions left in the store, once dead.

    Parameters
    ----------
    root : Path
        The store.
    keep : set of str
        The keys of the inputs listed now and in the manifest: a result folder named like a
        leftover is an input's, never a leftover.
    lock_timeout, stale_after : float
        Seconds after which a stale lock moved aside, or another host's folder, is dead.
    """
    found = [path for path in sorted(root.iterdir()) if path.is_file() and (
        _OLD_MANIFEST.fullmatch(path.name)
        or (_OLD_LOCK.fullmatch(path.name) and _unchanged_for(path, lock_timeout)))]
    folders = [root / RESULTS] if (root / RESULTS).is_dir() else []
    while folders:
        for child in sorted(folders.pop().iterdir()):
            if not child.is_dir() or child.is_symlink() or \
                    child.relative_to(root / RESULTS).as_posix() in keep:
                continue
            match = _OLD_STAGING.fullmatch(child.name)
            if match and _old_staging_is_dead(child, match, stale_after):
                found.append(child)
            elif not match and not any((child / name).exists() for name in ("result.zarr",
                                                                             MARKER)):
                folders.append(child)  # a folder of keys, e.g. results/2026/
    return found


def _old_staging_is_dead(folder, match, stale_after):
    host, pid = match["host"], int(match["pid"])
    gone = process_is_gone(host, pid) or (host != socket.gethostname()
                                          and _unchanged_for(folder, stale_after))
    if match["what"] == "replaced":  # the previous result, kept until its successor is in place
        return gone and (folder.parent / match["target"]).is_dir()
    return gone


def remove_leftover(path, staging):
    """Delete a leftover found by :func:`dead_staging` or :func:`old_leftovers`."""
    if path.parent == staging:
        remove_owned(path)
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
