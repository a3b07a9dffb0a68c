"""A batch store's records: ``manifest.json``, replaced whole, and ``runs.jsonl``, appended.

Both are written only by the holder of the store's lock (:mod:`.batch_lock`). What an entry
says (whether a claim or a run is alive, an input's state) is read here too.
"""

import json
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timezone

from daskgmm import atomic
from daskgmm.ownership import process_is_gone, remove_owned

from .batch_layout import MANIFEST, RUNS, read_text

logger = logging.getLogger(__name__)

MANIFEST_FORMAT, MANIFEST_VERSION = "daskgmm.batch", 1


def now_iso():
    """The current UTC time, to the second, as recorded in the store."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id():
    """A run id: its UTC start time and a random suffix, unique across hosts."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def empty_manifest():
    """The manifest of a store no run has written to."""
    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "channels": None,
            "inputs": {}, "failed": {}, "claims": {}, "runs": {}, "models": {}}


def read_manifest(root):
    """Return the manifest of the store at ``root`` (empty when no run has written one).

    Parameters
    ----------
    root : Path

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        If ``manifest.json`` is not a batch manifest this version reads.
    """
    text = read_text(root / MANIFEST)
    if text is None:
        return empty_manifest()
    try:
        manifest = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{root / MANIFEST} is not valid JSON ({error})") from None
    return checked_manifest(manifest, root / MANIFEST)


def checked_manifest(manifest, where):
    """Return ``manifest`` (read from ``where``) if it is a batch manifest this version reads.

    Raises
    ------
    ValueError
        If it is not.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{where} is not a daskgmm batch manifest")
    if manifest["format_version"] > MANIFEST_VERSION:
        raise ValueError(f"{where} was written by a newer daskgmm; upgrade")
    manifest.setdefault("runs", {})  # not kept by earlier versions
    return manifest


def write_manifest(root, staging, manifest):
    """Replace the manifest of the store at ``root`` in one rename (written in ``staging``)."""
    folder = atomic.new_staging(staging, "batch-manifest", MANIFEST)
    with open(folder / MANIFEST, "w") as file:
        json.dump(manifest, file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(folder / MANIFEST, root / MANIFEST)
    remove_owned(folder)


def _drop_cut_line(file):
    """Truncate a JSON-lines file (open ``a+b``) after its last whole line; whether it was cut."""
    size = file.seek(0, os.SEEK_END)
    if not size:
        return False
    file.seek(size - 1)
    if file.read(1) == b"\n":
        return False
    file.seek(0)
    file.truncate(file.read().rfind(b"\n") + 1)
    return True


def append_runs(root, records):
    """Append lines to the store's ``runs.jsonl``, first dropping a cut last line.

    Parameters
    ----------
    root : Path
    records : list of dict
        JSON-ready, one line each.
    """
    with open(root / RUNS, "a+b") as file:
        if _drop_cut_line(file):
            logger.warning("dropped the cut last line of %s", root / RUNS)
        file.write(b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records))


def read_runs(root):
    """Return the lines of the store's ``runs.jsonl``, oldest first.

    A killed writer may have left the last line cut: only complete lines are read.
    """
    text = read_text(root / RUNS) or ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()
            if line.strip()]


def killed_record(manifest, run, found_by):
    """Return the ``runs.jsonl`` line of a registered run found dead by the run ``found_by``.

    Parameters
    ----------
    manifest : dict
        Where the dead run is still registered.
    run, found_by : str
        Run ids.
    """
    entry = manifest["runs"][run]
    done = {name: e for name, e in manifest["inputs"].items() if e["run"] == run}
    return {"run": run, "host": entry["host"], "pid": entry["pid"],
            "started": entry["started"], "status": "killed", "claimed": entry["claimed"],
            "processed": sorted(done), "pixels": sum(e["pixels"] for e in done.values()),
            "failures": {name: e["reason"] for name, e in manifest["failed"].items()
                         if e["run"] == run},
            "found": now_iso(), "found_by": found_by}


def is_live(entry, claim_timeout):
    """Whether a claim's (or a run's) process is alive and recorded progress within
    ``claim_timeout`` seconds."""
    recent = time.time() - entry["time"] < claim_timeout
    return recent and not process_is_gone(entry["host"], entry["pid"])


def is_running(run, claim_timeout):
    """Whether a registered run is alive (another host's: heard from within claim_timeout)."""
    if process_is_gone(run["host"], run["pid"]):
        return False
    return run["host"] == socket.gethostname() or is_live(run, claim_timeout)


def input_state(item, manifest, claim_timeout):
    """Return an input's state: new, changed, done, failed or claimed (by a live run).

    Parameters
    ----------
    item : BatchInput
    manifest : dict
    claim_timeout : float
        Seconds after which a claim whose run recorded nothing is dead.
    """
    claim = manifest["claims"].get(item.name)
    if claim is not None and is_live(claim, claim_timeout):
        return "claimed"
    for section, state in (("inputs", "done"), ("failed", "failed")):
        entry = manifest[section].get(item.name)
        if entry is not None and entry["identity"] == item.identity:
            return state
    known = item.name in manifest["inputs"] or item.name in manifest["failed"]
    return "changed" if known else "new"
