"""Batch stores: the long-lived output of a scheduled segment job, shared by runs that overlap.

A batch store (``output.path`` of a job with a ``batch`` section) holds::

    .daskgmm.json          its ownership marker (kind ``batch-store``)
    manifest.json          inputs done (key, identity, model version), inputs that failed,
                           inputs claimed and runs registered by running runs, models applied
    runs.jsonl             one JSON line per run: what it processed, skipped and took, and how
                           it ended (``ok``, ``failed``, or ``killed``: found dead by a later run)
    lock                   exists while a run reads and changes the manifest (milliseconds)
    results/<key>/         one input's result.zarr and previews/, each replaced atomically
    models/<version>.zarr  every model a run applied, named by a hash of its parameters
    .staging/              every temporary thing: staging folders named only by a random id

The manifest is only ever replaced whole (written in a staging folder, then ``os.replace``),
and only by the holder of the lock: a lock file created with ``O_CREAT | O_EXCL`` that names its
host, process, run and time. A lock older than ``batch.lock_timeout`` seconds, or whose process
is gone, is stale and taken over. A run holds the lock only to claim inputs (recording each
with its run id, host, process and the time, and registering itself), to record an input done
or failed (refreshing the time of its claims), and to log its end; it processes inputs without
it. An input claimed by another run is left alone while that run is alive and has recorded
progress within ``batch.claim_timeout`` seconds; after that, it is claimed afresh.

A run killed at any moment leaves nothing a later run cannot recognise. When a run claims, it
first tidies the store (under the lock): a registered run that is dead gets a ``killed`` line
in ``runs.jsonl`` (unless it logged its end before it died), and its registration, dead claims
and ``failed`` entries of inputs no longer listed are dropped; then the dead leftovers are
deleted (a ``runs.jsonl`` line cut short by a kill is dropped before the next is appended).
A writer is dead when its process is gone; a process of another host cannot be asked,
so there it is dead once it has been silent for ``batch.claim_timeout`` seconds (the time after
which its claims are taken over anyway). A staging folder is its writer's while the process its
marker names lives; a sealed or unmarked one (being swapped in, or swapped out and deleted) is
dead once it has not changed for ``claim_timeout`` seconds. The temporary names of earlier
versions are matched by strict patterns and deleted when their process is gone: the manifest's
``.manifest.json.<8 hex>`` (written only under the lock, so dead when its holder finds it),
``.lock.stale-<8 hex>`` (a stale lock moved aside; dead when unchanged for ``lock_timeout``)
and ``results/**/.<name>.incomplete-<host>-<pid>-<8 hex>`` / ``.replaced-`` (never an input's
result).
"""

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from daskgmm import atomic, store
from daskgmm.config import ConfigError
from daskgmm.guard import real_path
from daskgmm.ownership import (
    MARKER,
    is_dead_staging,
    process_is_gone,
    read_marker,
    remove_owned,
)

logger = logging.getLogger(__name__)

MANIFEST, RUNS, LOCK, RESULTS, MODELS = "manifest.json", "runs.jsonl", "lock", "results", "models"
STAGING = ".staging"
LAYOUT = frozenset({MARKER, MANIFEST, RUNS, LOCK, RESULTS, MODELS, STAGING})
STORE_KIND, RESULT_KIND = "batch-store", "batch-result"  # kinds of the store's own folders
MANIFEST_FORMAT, MANIFEST_VERSION = "daskgmm.batch", 1
# How often a run waiting for the lock looks again.
LOCK_POLL_SECONDS = 0.02
_STAGING_NAME = re.compile(re.escape(atomic.STAGING_PREFIX) + "[0-9a-f]{32}")
_OLD_MANIFEST = re.compile(r"\.manifest\.json\.[0-9a-f]{8}")
_OLD_LOCK = re.compile(r"\.lock\.stale-[0-9a-f]{8}")
_OLD_STAGING = re.compile(r"\.(?P<target>.+)\.(?P<what>incomplete|replaced)-(?P<host>.+)-"
                          r"(?P<pid>\d+)-[0-9a-f]{8}")


def now_iso():
    """The current UTC time, to the second, as recorded in the store."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id():
    """A run id: its UTC start time and a random suffix, unique across hosts."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def model_version(model, preprocessing=None):
    """A model's version: a short hash of its fitted parameters and feature scaling."""
    digest = hashlib.sha256()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        digest.update(np.ascontiguousarray(getattr(model, name), dtype=np.float64).tobytes())
    digest.update(json.dumps([model.covariance_type, preprocessing], sort_keys=True).encode())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------ leftovers


def _unchanged_for(path, seconds):
    try:
        return time.time() - path.stat().st_ctime > seconds
    except FileNotFoundError:
        return False


def dead_staging(staging, stale_after):
    """The staging folders in ``staging`` whose writers have died (see the module's docstring)."""
    if not staging.is_dir():
        return []
    dead = []
    for folder in sorted(staging.iterdir()):
        if not _STAGING_NAME.fullmatch(folder.name) or folder.is_symlink() or \
                not folder.is_dir():
            continue
        marker = read_marker(folder)
        if marker is None or "entries" in marker:
            if _unchanged_for(folder, stale_after):
                dead.append(folder)
        elif is_dead_staging(folder, marker["kind"], stale_after=stale_after):
            dead.append(folder)
    return dead


def old_leftovers(root, keep, lock_timeout, stale_after):
    """The temporary files and folders earlier versions left in the store, once dead.

    ``keep`` holds the keys of the inputs listed now and in the manifest: a result folder
    named like a leftover is an input's, never a leftover.
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


def _remove_leftover(path, staging):
    if path.parent == staging:
        remove_owned(path)
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _old_staging_is_dead(folder, match, stale_after):
    host, pid = match["host"], int(match["pid"])
    gone = process_is_gone(host, pid) or (host != socket.gethostname()
                                          and _unchanged_for(folder, stale_after))
    if match["what"] == "replaced":  # the previous result, kept until its successor is in place
        return gone and (folder.parent / match["target"]).is_dir()
    return gone


# ------------------------------------------------------------------ the lock


def _read_text(path):
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def _holder(text):
    """The facts a lock file holds; empty while it is being written (or was left half-written)."""
    try:
        holder = json.loads(text or "")
    except ValueError:
        return {}
    keys = ("host", "pid", "time", "token")
    return holder if isinstance(holder, dict) and all(k in holder for k in keys) else {}


class StoreLock:
    """The lock of a batch store: a file created with ``O_CREAT | O_EXCL``, naming its owner.

    Parameters
    ----------
    path : Path
        The lock file.
    timeout : float
        Seconds after which a held lock is stale (its holder is taken to have died).
    owner : dict
        JSON-ready facts about the holder: host, pid and run.
    staging : Path, optional
        Where a stale lock is moved aside to be removed; ``.staging`` beside it when None.
    """

    def __init__(self, path, timeout, owner, staging=None):
        self.path = Path(path)
        self.timeout = timeout
        self.owner = owner
        self.staging = Path(staging) if staging else self.path.parent / STAGING
        self.token = None

    def __enter__(self):
        while not self._create():
            text = _read_text(self.path)
            if text is not None and self._is_stale(text):
                self._break(text)
            else:
                time.sleep(LOCK_POLL_SECONDS)
        return self

    def __exit__(self, *exc_info):
        if _holder(_read_text(self.path)).get("token") == self.token:
            self.path.unlink()
        else:
            logger.warning("the lock %s was taken over while this run held it (it was held "
                           "longer than batch.lock_timeout)", self.path)

    def _create(self):
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        self.token = uuid.uuid4().hex
        with os.fdopen(descriptor, "w") as file:
            json.dump({**self.owner, "time": time.time(), "token": self.token}, file)
        return True

    def _is_stale(self, text):
        holder = _holder(text)
        if holder:
            since, gone = holder["time"], process_is_gone(holder["host"], holder["pid"])
        else:  # being written, or its writer died writing it
            try:
                since, gone = self.path.stat().st_mtime, False
            except FileNotFoundError:
                return False
        return gone or time.time() - since > self.timeout

    def _break(self, stale_text):
        """Remove a stale lock. Moving it aside first means only one run removes it; a run that
        moved a fresh lock instead (another run took the stale one over first) puts it back."""
        aside = atomic.new_staging(self.staging, "batch-lock", self.path.name)
        moved = aside / self.path.name
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            remove_owned(aside)
            return
        if _read_text(moved) != stale_text:
            with suppress(FileExistsError):
                os.link(moved, self.path)
        else:
            logger.warning("took over the stale lock %s (%s)", self.path, stale_text)
        remove_owned(aside)


# ------------------------------------------------------------------ the manifest


def empty_manifest():
    """The manifest of a store no run has written to."""
    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "channels": None,
            "inputs": {}, "failed": {}, "claims": {}, "runs": {}, "models": {}}


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


def _lines(text):
    """The complete lines of a JSON-lines text (a killed writer may have left the last one cut)."""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()
            if line.strip()]


class BatchStore:
    """A batch store seen by one run: its manifest, lock, claims, results, models and run log.

    Parameters
    ----------
    root : str or Path
        The store (``output.path``).
    config : BatchConfig
    run : str, optional
        This run's id; a new one when None.
    """

    def __init__(self, root, config, run=None):
        self.root = real_path(root)  # links and ".." resolved, as the guard clears it
        self.staging = self.root / STAGING
        self.config = config
        self.run = run or new_run_id()
        self.started = now_iso()
        self.owner = {"run": self.run, "host": socket.gethostname(), "pid": os.getpid()}
        self._laid_out = False

    def check(self, key="output.path"):
        """Raise :class:`ConfigError` unless the store is new, empty or a readable batch store.

        A batch store is marked as one (stores of earlier versions are not, and get the marker
        when a run first writes) and holds nothing but its layout at its top.
        """
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root} is a file; a batch job keeps a folder there", key)
        marker = read_marker(self.root) if self.root.is_dir() else None
        if marker is not None and marker["kind"] != STORE_KIND:
            raise ConfigError(f"{self.root} is a daskgmm {marker['kind']} folder, not a batch "
                              "store; choose a new or empty folder", key)
        entries = self.root.iterdir() if self.root.is_dir() else ()
        foreign = sorted(p.name for p in entries if not self._is_own(p))
        if foreign:
            raise ConfigError(f"{self.root} holds {', '.join(foreign)}, which no batch job "
                              "wrote; choose a new or empty folder", key)
        try:
            self.read()
        except ValueError as error:
            raise ConfigError(str(error), key) from None

    @staticmethod
    def _is_own(path):
        old = _OLD_MANIFEST.fullmatch(path.name) or _OLD_LOCK.fullmatch(path.name)
        return path.name in LAYOUT or (old is not None and path.is_file())

    def read(self):
        """Return the manifest (empty when no run has written one).

        Raises
        ------
        ValueError
            If ``manifest.json`` is not a batch manifest this version reads.
        """
        text = _read_text(self.root / MANIFEST)
        if text is None:
            return empty_manifest()
        try:
            manifest = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{self.root / MANIFEST} is not valid JSON ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{self.root / MANIFEST} is not a daskgmm batch manifest")
        if manifest["format_version"] > MANIFEST_VERSION:
            raise ValueError(f"{self.root / MANIFEST} was written by a newer daskgmm; upgrade")
        manifest.setdefault("runs", {})  # not kept by earlier versions
        return manifest

    def _write(self, manifest):
        folder = atomic.new_staging(self.staging, "batch-manifest", MANIFEST)
        with open(folder / MANIFEST, "w") as file:
            json.dump(manifest, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(folder / MANIFEST, self.root / MANIFEST)
        remove_owned(folder)

    def _lay_out(self):
        """Create the store's folders and its marker, if a run has not yet."""
        if self._laid_out:
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        if read_marker(self.root) is None:
            folder = atomic.new_staging(self.staging, STORE_KIND, self.root.name)
            with suppress(FileExistsError):  # another run marked it first
                os.link(folder / MARKER, self.root / MARKER)
            remove_owned(folder)
        self._laid_out = True

    @contextmanager
    def _locked(self):
        self._lay_out()
        with StoreLock(self.root / LOCK, self.config.lock_timeout, self.owner, self.staging):
            yield

    @contextmanager
    def _changing(self):
        """Yield the manifest under the lock; write it back if the block changed it."""
        with self._locked():
            manifest = self.read()
            before = json.dumps(manifest, sort_keys=True)
            yield manifest
            if json.dumps(manifest, sort_keys=True) != before:
                self._write(manifest)

    def states(self, inputs, manifest=None):
        """Return each input's state: new, changed, done, failed or claimed (by a live run)."""
        manifest = self.read() if manifest is None else manifest
        return {item.name: self._state(item, manifest) for item in inputs}

    def _state(self, item, manifest):
        claim = manifest["claims"].get(item.name)
        if claim is not None and self._is_live(claim):
            return "claimed"
        for section, state in (("inputs", "done"), ("failed", "failed")):
            entry = manifest[section].get(item.name)
            if entry is not None and entry["identity"] == item.identity:
                return state
        known = item.name in manifest["inputs"] or item.name in manifest["failed"]
        return "changed" if known else "new"

    def _is_live(self, claim):
        recent = time.time() - claim["time"] < self.config.claim_timeout
        return recent and not process_is_gone(claim["host"], claim["pid"])

    def _is_running(self, run):
        """Whether a registered run is alive (another host's: heard from within claim_timeout)."""
        if process_is_gone(run["host"], run["pid"]):
            return False
        return run["host"] == socket.gethostname() or self._is_live(run)

    # -------------------------------------------------------------- tidying

    def _untidy(self, manifest, inputs):
        """What a run that claims tidies: dead runs, dead claims, vanished failures, leftovers."""
        listed = {item.name for item in inputs}
        keep = listed | set(manifest["inputs"]) | set(manifest["failed"])
        return {
            "runs": [run for run, entry in manifest["runs"].items()
                     if not self._is_running(entry)],
            "claims": [name for name, claim in manifest["claims"].items()
                       if not self._is_live(claim)],
            "failed": [name for name in manifest["failed"] if name not in listed],
            "leftovers": (dead_staging(self.staging, self.config.claim_timeout)
                          + old_leftovers(self.root, keep, self.config.lock_timeout,
                                          self.config.claim_timeout)),
        }

    def needs_tidying(self, inputs):
        """Whether a run would find anything to tidy (see :meth:`claim`); changes nothing."""
        if not self.root.is_dir():
            return False
        return any(self._untidy(self.read(), inputs).values())

    def _tidy(self, manifest, inputs):
        untidy = self._untidy(manifest, inputs)
        logged = {line.get("run") for line in self.read_runs()} if untidy["runs"] else set()
        killed = [self._killed(manifest, run) for run in untidy["runs"] if run not in logged]
        if killed:
            logger.warning("found %d run(s) killed before they ended: %s", len(killed),
                           ", ".join(line["run"] for line in killed))
            self._append_runs(killed)
        for run in untidy["runs"]:
            del manifest["runs"][run]
        for name in untidy["claims"]:
            del manifest["claims"][name]
        for name in untidy["failed"]:
            del manifest["failed"][name]
        for path in untidy["leftovers"]:
            logger.info("removing %s, left by a run that died", path)
            try:
                _remove_leftover(path, self.staging)
            except OSError as error:  # e.g. another run removed it first; the next run retries
                logger.warning("could not remove %s (%s)", path, error)

    def _killed(self, manifest, run):
        """The ``runs.jsonl`` line of a registered run found dead."""
        entry = manifest["runs"][run]
        done = {name: e for name, e in manifest["inputs"].items() if e["run"] == run}
        return {"run": run, "host": entry["host"], "pid": entry["pid"],
                "started": entry["started"], "status": "killed", "claimed": entry["claimed"],
                "processed": sorted(done), "pixels": sum(e["pixels"] for e in done.values()),
                "failures": {name: e["reason"] for name, e in manifest["failed"].items()
                             if e["run"] == run},
                "found": now_iso(), "found_by": self.run}

    # -------------------------------------------------------------- claims and records

    def claim(self, inputs):
        """Tidy the store, claim the new and changed inputs (at most ``batch.max_inputs``) and
        register this run if it claimed any; return them.

        Parameters
        ----------
        inputs : list of BatchInput
            Every input listed now (a failed entry of any other is dropped).
        """
        with self._changing() as manifest:
            self._tidy(manifest, inputs)
            states = self.states(inputs, manifest)
            pending = [item for item in inputs if states[item.name] in ("new", "changed")]
            claimed = pending[: self.config.max_inputs]
            now = time.time()
            for item in claimed:
                manifest["claims"][item.name] = {**self.owner, "time": now,
                                                 "identity": item.identity}
            if claimed:
                entry = manifest["runs"].setdefault(self.run, {
                    **self.owner, "started": self.started, "claimed": []})
                entry.update(time=now, claimed=entry["claimed"] + [i.name for i in claimed])
        return claimed

    def _owns(self, manifest, item):
        claim = manifest["claims"].get(item.name)
        if claim is not None and claim["run"] == self.run:
            return True
        logger.warning("%s was claimed afresh by another run while this one processed it "
                       "(raise batch.claim_timeout); that run records it", item.name)
        return False

    def _settle(self, item, section, entry):
        with self._changing() as manifest:
            if self._owns(manifest, item):
                del manifest["claims"][item.name]
                for other in ("inputs", "failed"):
                    manifest[other].pop(item.name, None)
                manifest[section][item.name] = {"identity": item.identity, "run": self.run,
                                                "time": now_iso(), **entry}
            now = time.time()
            for claim in manifest["claims"].values():
                if claim["run"] == self.run:
                    claim["time"] = now
            if self.run in manifest["runs"]:
                manifest["runs"][self.run]["time"] = now

    def record_done(self, item, model, pixels):
        """Record an input processed with model version ``model`` (its result is in place)."""
        self._settle(item, "inputs", {"model": model, "pixels": pixels,
                                      "result": self.result_name(item.name)})

    def record_failed(self, item, reason):
        """Record an input skipped for ``reason``; it is tried again once it changes."""
        self._settle(item, "failed", {"reason": reason})

    def record_model(self, version, entry, channels):
        """Record a model version applied by this run, and the channels inputs must have."""
        with self._changing() as manifest:
            manifest["models"].setdefault(version, {"run": self.run, "time": now_iso(),
                                                    "path": self.model_name(version), **entry})
            if manifest["channels"] is None:
                manifest["channels"] = channels

    def finish(self, record):
        """Log this run's end (``record``, one line of ``runs.jsonl``), then let go of its
        claims and registration: a run killed between the two is known to have ended."""
        with self._changing() as manifest:
            self._append_runs([record])
            manifest["runs"].pop(self.run, None)
            for name in [n for n, c in manifest["claims"].items() if c["run"] == self.run]:
                del manifest["claims"][name]

    def _append_runs(self, records):
        """Append lines to ``runs.jsonl`` (under the lock), first dropping a cut last line."""
        with open(self.root / RUNS, "a+b") as file:
            if _drop_cut_line(file):
                logger.warning("dropped the cut last line of %s", self.root / RUNS)
            file.write(b"".join(json.dumps(r, sort_keys=True).encode() + b"\n"
                                for r in records))

    def read_runs(self):
        """Return the summaries of all runs so far, oldest first."""
        return _lines(_read_text(self.root / RUNS) or "")

    @staticmethod
    def result_name(name):
        """Where an input's results go, relative to the store."""
        return f"{RESULTS}/{name}"

    @staticmethod
    def model_name(version):
        """Where a model version is saved, relative to the store."""
        return f"{MODELS}/{version}.zarr"

    def save_model(self, version, model, preprocessing, guard):
        """Save a model version to ``models/`` once (a version is the same model everywhere).

        The path is cleared by the job's ``guard`` first, as every path a job writes.
        """
        path = self.root / self.model_name(version)
        if path.exists():
            return
        path = guard.check(path, "output.path", store.MODEL, within=real_path(self.root / MODELS))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_directory(path, store.MODEL, self.staging) as staging:
            store.write_model(staging, model, {"preprocessing": preprocessing})
