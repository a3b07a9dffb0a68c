"""Batch stores: the long-lived output of a scheduled segment job, shared by runs that overlap.

A batch store (``output.path`` of a job with a ``batch`` section) holds::

    manifest.json          inputs done (name, identity, model version), inputs that failed,
                           inputs claimed by running runs, and the model versions applied
    runs.jsonl             one JSON line per run: what it processed, skipped and took
    lock                   exists while a run reads and changes the manifest (milliseconds)
    results/<input>/       one input's result.zarr and previews/, each replaced atomically
    models/<version>.zarr  every model a run applied, named by a hash of its parameters

The manifest is only ever replaced whole (a temporary file, then ``os.replace``), and only by
the holder of the lock: a lock file created with ``O_CREAT | O_EXCL`` that names its host,
process, run and time. A lock older than ``batch.lock_timeout`` seconds, or whose process is
gone, is stale and taken over. A run holds the lock only to claim inputs (recording each with
its run id, host, process and the time), to record an input done or failed (refreshing the time
of its other claims), and to let its claims go when it ends; it processes inputs without it.
An input claimed by another run is left alone while that run is alive and has recorded progress
within ``batch.claim_timeout`` seconds; after that, it is claimed afresh.
"""

import glob
import hashlib
import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from daskgmm import atomic, store
from daskgmm.config import ConfigError
from daskgmm.ownership import process_is_gone

logger = logging.getLogger(__name__)

MANIFEST, RUNS, LOCK, RESULTS, MODELS = "manifest.json", "runs.jsonl", "lock", "results", "models"
MANIFEST_FORMAT, MANIFEST_VERSION = "daskgmm.batch", 1
# How often a run waiting for the lock looks again.
LOCK_POLL_SECONDS = 0.02
_HASH_BLOCK = 1 << 20


def now_iso():
    """The current UTC time, to the second, as recorded in the store."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id():
    """A run id: its UTC start time and a random suffix, unique across hosts."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch: an image file, or one array of a Zarr group.

    Attributes
    ----------
    name : str
        Unique within the batch: the file's path under the folder (or the glob's fixed part),
        or the array's name.
    path : str
        The image file, or the Zarr group.
    array : str or None
        The array of the group; None for a file.
    identity : dict
        ``size`` and ``mtime_ns`` (identity ``stat``) or ``sha256`` (identity ``content``).
    """

    name: str
    path: str
    array: str | None
    identity: dict

    @property
    def location(self):
        """The file, or the array's folder in the group."""
        return self.path if self.array is None else str(Path(self.path) / self.array)


def input_format(config, key="input"):
    """Return ``'zarr'`` (a group whose arrays are the inputs) or ``'images'`` (a folder/glob).

    Raises
    ------
    ConfigError
        For a remote path (an input's identity is read from the local file system) or a table
        format.
    """
    if "://" in config.path:
        raise ConfigError(f"batch mode reads local files, got {config.path!r}", f"{key}.path")
    if config.format in ("zarr", "images"):
        return config.format
    if config.format != "auto":
        raise ConfigError(f"batch mode reads image files or a Zarr group, not {config.format}",
                          f"{key}.format")
    path = config.path.rstrip("/")
    return "zarr" if path.endswith(".zarr") or store.is_zarr_store(path) else "images"


def list_inputs(config, identity, key="input"):
    """Return the inputs at ``config.path`` now, sorted by name, each with its identity.

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
    if input_format(config, key) == "zarr":
        located = _group_arrays(config.path, key)
    else:
        located = _image_files(config.path, key)
    return [BatchInput(name, path, array, _identity(Path(path) / (array or ""), identity))
            for name, path, array in located]


def _group_arrays(path, key):
    if not Path(path).is_dir():
        raise ConfigError(f"no Zarr group at {path!r}", f"{key}.path")
    try:
        names = store.group_array_names(path)
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.path") from None
    return [(name, path, name) for name in names]


def _image_files(path, key):
    if glob.has_magic(path):
        parts = Path(path).parts
        root = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), parts))
        files = [Path(f) for f in glob.glob(path, recursive=True)]
    elif Path(path).is_dir():
        root = Path(path)
        files = list(root.iterdir())
    else:
        raise ConfigError(f"no such folder: {path!r} (batch mode reads a folder or glob of "
                          "images, or a Zarr group)", f"{key}.path")
    files = sorted(f for f in files if f.suffix.lower() in store.IMAGE_SUFFIXES and f.is_file())
    return [(f.relative_to(root).as_posix(), str(f), None) for f in files]


def _identity(path, kind):
    """An input's identity: its size and latest modification time, or a hash of its bytes."""
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


def model_version(model, preprocessing=None):
    """A model's version: a short hash of its fitted parameters and feature scaling."""
    digest = hashlib.sha256()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        digest.update(np.ascontiguousarray(getattr(model, name), dtype=np.float64).tobytes())
    digest.update(json.dumps([model.covariance_type, preprocessing], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def most_common(values):
    """The most frequent of ``values``; on a tie, the one seen first."""
    return Counter(values).most_common(1)[0][0]


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
    """

    def __init__(self, path, timeout, owner):
        self.path = Path(path)
        self.timeout = timeout
        self.owner = owner
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
        moved = self.path.with_name(f".{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return
        if _read_text(moved) != stale_text:
            with suppress(FileExistsError):
                os.link(moved, self.path)
        else:
            logger.warning("took over the stale lock %s (%s)", self.path, stale_text)
        moved.unlink()


# ------------------------------------------------------------------ the manifest


def empty_manifest():
    """The manifest of a store no run has written to."""
    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "channels": None,
            "inputs": {}, "failed": {}, "claims": {}, "models": {}}


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
        self.root = Path(root)
        self.config = config
        self.run = run or new_run_id()
        self.owner = {"run": self.run, "host": socket.gethostname(), "pid": os.getpid()}

    def check(self, key="output.path"):
        """Raise :class:`ConfigError` unless the store is new, empty or a readable batch store."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root} is a file; a batch job keeps a folder there", key)
        layout = {MANIFEST, RUNS, LOCK, RESULTS, MODELS}
        foreign = sorted(p.name for p in self.root.glob("*") if p.name not in layout)
        if foreign:
            raise ConfigError(f"{self.root} holds {', '.join(foreign)}, which no batch job "
                              "wrote; choose a new or empty folder", key)
        try:
            self.read()
        except ValueError as error:
            raise ConfigError(str(error), key) from None

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
        return manifest

    def _write(self, manifest):
        staging = self.root / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
        with open(staging, "w") as file:
            json.dump(manifest, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, self.root / MANIFEST)

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with StoreLock(self.root / LOCK, self.config.lock_timeout, self.owner):
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

    def claim(self, inputs):
        """Claim the new and changed inputs (at most ``batch.max_inputs``); return them."""
        with self._changing() as manifest:
            states = self.states(inputs, manifest)
            pending = [item for item in inputs if states[item.name] in ("new", "changed")]
            claimed = pending[: self.config.max_inputs]
            for item in claimed:
                manifest["claims"][item.name] = {**self.owner, "time": time.time(),
                                                 "identity": item.identity}
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
            for claim in manifest["claims"].values():
                if claim["run"] == self.run:
                    claim["time"] = time.time()

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

    def release(self):
        """Let go of this run's remaining claims (at its end, whether it succeeded or not)."""
        with self._changing() as manifest:
            mine = [name for name, claim in manifest["claims"].items() if claim["run"] == self.run]
            for name in mine:
                del manifest["claims"][name]

    def append_run(self, record):
        """Append one run's summary to ``runs.jsonl``."""
        with self._locked(), open(self.root / RUNS, "a") as file:
            file.write(json.dumps(record, sort_keys=True) + "\n")

    def read_runs(self):
        """Return the summaries of all runs so far, oldest first."""
        text = _read_text(self.root / RUNS) or ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    @staticmethod
    def result_name(name):
        """Where an input's results go, relative to the store."""
        return f"{RESULTS}/{name}"

    @staticmethod
    def model_name(version):
        """Where a model version is saved, relative to the store."""
        return f"{MODELS}/{version}.zarr"

    def save_model(self, version, model, preprocessing):
        """Save a model version to ``models/`` once (a version is the same model everywhere)."""
        path = self.root / self.model_name(version)
        if path.exists():
            return
        with atomic.atomic_directory(path, store.MODEL) as staging:
            store.write_model(staging, model, {"preprocessing": preprocessing})
