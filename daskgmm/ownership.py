"""Ownership markers: the proof, inside a folder, that daskgmm made it and what it put there.

Every folder a job creates as a whole (an output, a checkpoint, an ingest store, a batch
store, a batch result, a staging folder) holds a small JSON file, :data:`MARKER`, that names
its kind, the job that made it and, once it is complete, every entry it holds. A folder may be
replaced or deleted only when its marker is of the expected kind and it holds nothing the marker
does not list (:func:`foreign_entries`), so a user's file put beside a job's own is never lost.
"""

import json
import os
import shutil
import socket
import time
from contextlib import suppress
from pathlib import Path

MARKER = ".daskgmm.json"
MARKER_FORMAT = "daskgmm.owned"


def owner():
    """Facts about this process, recorded in the markers it writes."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def process_is_gone(host, pid):
    """Whether process ``pid`` of ``host`` has ended (known only on that host: else False)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def entries(folder):
    """Every entry below ``folder`` (not following links), as relative POSIX paths.

    Folders end in ``/``; files, links and anything else do not; the marker is left out.
    """
    folder = Path(folder)
    found = set()
    for parent, dirs, files in os.walk(folder, followlinks=False):
        relative = Path(parent).relative_to(folder)
        for name in dirs:
            path = Path(parent) / name
            found.add((relative / name).as_posix() + ("" if path.is_symlink() else "/"))
        found.update((relative / name).as_posix() for name in files)
    found.discard(MARKER)
    return found


def remove_owned(folder):
    """Delete a folder daskgmm made, its marker last.

    A deletion cut short (a killed job) so leaves a folder that its marker still proves to be
    daskgmm's, holding fewer entries than it lists, which a later job may delete in turn.
    """
    folder = Path(folder)
    for child in folder.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    with suppress(FileNotFoundError):  # a job tidying leftovers took the empty folder first
        folder.rmdir()


def write_marker(folder, kind, target, complete):
    """Write the marker of ``folder``, made for ``target`` (a name); list its entries if complete.

    The marker is replaced in one rename, so it is never seen half-written.
    """
    folder = Path(folder)
    marker = {"format": MARKER_FORMAT, "kind": kind, "target": str(target), **owner()}
    if complete:
        marker["entries"] = sorted(entries(folder))
    staging = folder / f"{MARKER}.{os.getpid()}"
    staging.write_text(json.dumps(marker, sort_keys=True))
    os.replace(staging, folder / MARKER)


def read_marker(folder):
    """The marker of ``folder`` as a dict, or None when it has none (or an unreadable one)."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    return marker


def foreign_entries(folder, kind):
    """What in ``folder`` daskgmm did not put there for a ``kind`` folder; empty if none.

    A folder without a marker of that kind is foreign as a whole: the result is then its
    entries (or the folder itself, when it is empty or not a folder).
    """
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return [str(folder)]
    marker = read_marker(folder)
    found = entries(folder)
    if marker is None or marker["kind"] != kind or "entries" not in marker:
        return sorted(found) or [str(folder)]
    listed = set(marker["entries"])
    return sorted(found - listed)


def is_dead_staging(folder, kind, target=None, stale_after=None):
    """Whether ``folder`` is a staging folder whose writer has died.

    Parameters
    ----------
    folder : Path
    kind : str
        The kind of folder it was staging.
    target : str, optional
        The name of the path it was to replace; any when None.
    stale_after : float, optional
        Seconds after which a writer on another host is taken to have died (a process of
        another host cannot be asked).
    """
    marker = read_marker(folder)
    if marker is None or marker["kind"] != kind:
        return False
    if target is not None and marker["target"] != str(target):
        return False
    if process_is_gone(marker["host"], marker["pid"]):
        return True
    return stale_after is not None and time.time() - marker["time"] > stale_after
