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
which its claims are taken over anyway). How a dead leftover is told from a live one is
:mod:`.batch_leftovers`' part. A store in a bucket is the same store kept with conditional
writes instead of a lock and renames (:mod:`.batch_bucket`).
"""

import hashlib
import json
import logging
import os
import socket
import time
from contextlib import contextmanager

import numpy as np

from daskgmm import atomic
from daskgmm.config import ConfigError
from daskgmm.guard import real_path
from daskgmm.model_format import MODEL, write_model
from daskgmm.ownership import read_marker
from daskgmm.storage import is_url

from .batch_layout import LAYOUT, LOCK, MODELS, RESULTS, STAGING, STORE_KIND, lay_out
from .batch_leftovers import dead_staging, is_old_temporary, old_leftovers, remove_leftover
from .batch_lock import StoreLock
from .batch_manifest import (
    append_runs,
    input_state,
    is_live,
    is_running,
    killed_record,
    new_run_id,
    now_iso,
    read_manifest,
    read_runs,
    write_manifest,
)

logger = logging.getLogger(__name__)


def model_version(model, preprocessing=None):
    """A model's version: a short hash of its fitted parameters and feature scaling."""
    digest = hashlib.sha256()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        digest.update(np.ascontiguousarray(getattr(model, name), dtype=np.float64).tobytes())
    digest.update(json.dumps([model.covariance_type, preprocessing], sort_keys=True).encode())
    return digest.hexdigest()[:16]


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
        self.root = self.resolve(root)
        self.staging = self.staging_folder()
        self.config = config
        self.run = run or new_run_id()
        self.started = now_iso()
        self.owner = {"run": self.run, "host": socket.gethostname(), "pid": os.getpid()}
        self.laid_out = False

    @staticmethod
    def resolve(root):
        """The store's place as the guard clears it: links and ".." resolved."""
        return real_path(root)

    def staging_folder(self):
        """Where the store's temporary things are made."""
        return self.root / STAGING

    def path(self, name):
        """The place of an entry of the store (``name`` relative to it)."""
        return self.root / name

    def exists(self):
        """Whether a run has laid the store out."""
        return self.root.is_dir()

    def check(self, key="output.path"):
        """Raise :class:`ConfigError` unless the store is new, empty or a readable batch store.

        A batch store is marked as one (stores of earlier versions are not, and get the marker
        when a run first writes) and holds nothing but its layout at its top.
        """
        kind, foreign = self.survey(key)
        if kind is not None and kind != STORE_KIND:
            raise ConfigError(f"{self.root} is a daskgmm {kind} folder, not a batch store; "
                              "choose a new or empty folder", key)
        if foreign:
            raise ConfigError(f"{self.root} holds {', '.join(foreign)}, which no batch job "
                              "wrote; choose a new or empty folder", key)
        try:
            self.read()
        except ValueError as error:
            raise ConfigError(str(error), key) from None

    def survey(self, key):
        """The kind its marker names (None without one) and the names at the store's top that
        no batch job wrote."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root} is a file; a batch job keeps a folder there", key)
        marker = read_marker(self.root) if self.root.is_dir() else None
        entries = self.root.iterdir() if self.root.is_dir() else ()
        return (None if marker is None else marker["kind"],
                sorted(p.name for p in entries if not self._is_own(p)))

    @staticmethod
    def _is_own(path):
        return path.name in LAYOUT or is_old_temporary(path)

    def read(self):
        """Return the manifest (see :func:`.batch_manifest.read_manifest`)."""
        return read_manifest(self.root)

    @contextmanager
    def _locked(self):
        if not self.laid_out:
            lay_out(self.root, self.staging)
            self.laid_out = True
        with StoreLock(self.root / LOCK, self.config.lock_timeout, self.owner, self.staging):
            yield

    def change(self, edit):
        """Apply ``edit`` (a function of the manifest, changing it in place) and write the
        manifest back if it changed, under the store's lock; return what ``edit`` returns."""
        with self._locked():
            manifest = self.read()
            before = json.dumps(manifest, sort_keys=True)
            result = edit(manifest)
            if json.dumps(manifest, sort_keys=True) != before:
                write_manifest(self.root, self.staging, manifest)
            return result

    def log_runs(self, records):
        """Add lines (one per run, JSON-ready dicts) to the store's log of runs."""
        append_runs(self.root, records)

    def states(self, inputs, manifest=None):
        """Return each input's state: new, changed, done, failed or claimed (by a live run)."""
        manifest = self.read() if manifest is None else manifest
        return {item.name: input_state(item, manifest, self.config.claim_timeout)
                for item in inputs}

    # -------------------------------------------------------------- tidying

    def _untidy(self, manifest, inputs):
        """What a run that claims tidies: dead runs, dead claims, vanished failures, leftovers."""
        listed = {item.name for item in inputs}
        keep = listed | set(manifest["inputs"]) | set(manifest["failed"])
        return {
            "runs": [run for run, entry in manifest["runs"].items()
                     if not is_running(entry, self.config.claim_timeout)],
            "claims": [name for name, claim in manifest["claims"].items()
                       if not is_live(claim, self.config.claim_timeout)],
            "failed": [name for name in manifest["failed"] if name not in listed],
            "leftovers": self.leftovers(keep),
        }

    def leftovers(self, keep):
        """What dead runs left in the store (inputs not in ``keep`` have no business there)."""
        return (dead_staging(self.staging, self.config.claim_timeout)
                + old_leftovers(self.root, keep, self.config.lock_timeout,
                                self.config.claim_timeout))

    def needs_tidying(self, inputs):
        """Whether a run would find anything to tidy (see :meth:`claim`); changes nothing."""
        if not self.exists():
            return False
        return any(self._untidy(self.read(), inputs).values())

    def _tidy(self, manifest, inputs):
        untidy = self._untidy(manifest, inputs)
        logged = {line.get("run") for line in self.read_runs()} if untidy["runs"] else set()
        killed = [killed_record(manifest, run, self.run) for run in untidy["runs"]
                  if run not in logged]
        if killed:
            logger.warning("found %d run(s) killed before they ended: %s", len(killed),
                           ", ".join(line["run"] for line in killed))
            self.log_runs(killed)
        for run in untidy["runs"]:
            del manifest["runs"][run]
        for name in untidy["claims"]:
            del manifest["claims"][name]
        for name in untidy["failed"]:
            del manifest["failed"][name]
        for path in untidy["leftovers"]:
            logger.info("removing %s, left by a run that died", path)
            try:
                remove_leftover(path, self.staging)
            except OSError as error:  # e.g. another run removed it first; the next run retries
                logger.warning("could not remove %s (%s)", path, error)

    # -------------------------------------------------------------- claims and records

    def claim(self, inputs):
        """Tidy the store, claim the new and changed inputs (at most ``batch.max_inputs``) and
        register this run if it claimed any; return them.

        Parameters
        ----------
        inputs : list of BatchInput
            Every input listed now (a failed entry of any other is dropped).
        """
        def claim(manifest):
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

        return self.change(claim)

    def _owns(self, manifest, item):
        claim = manifest["claims"].get(item.name)
        if claim is not None and claim["run"] == self.run:
            return True
        logger.warning("%s was claimed afresh by another run while this one processed it "
                       "(raise batch.claim_timeout); that run records it", item.name)
        return False

    def _settle(self, item, section, entry):
        self.change(lambda manifest: self._settled(manifest, item, section, entry))

    def _settled(self, manifest, item, section, entry):
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
        self.change(lambda manifest: self.add_model(manifest, version, entry, channels))

    def add_model(self, manifest, version, entry, channels):
        """Add to ``manifest`` a model version applied by this run (and the channels inputs
        must have, if none are set yet): an edit for :meth:`change`."""
        manifest["models"].setdefault(version, {"run": self.run, "time": now_iso(),
                                                "path": self.model_name(version), **entry})
        if manifest["channels"] is None:
            manifest["channels"] = channels

    def finish(self, record):
        """Log this run's end (``record``, one line of ``runs.jsonl``), then let go of its
        claims and registration: a run killed between the two is known to have ended."""
        def finish(manifest):
            self.log_runs([record])
            manifest["runs"].pop(self.run, None)
            for name in [n for n, c in manifest["claims"].items() if c["run"] == self.run]:
                del manifest["claims"][name]

        self.change(finish)

    def read_runs(self):
        """Return the summaries of all runs so far, oldest first."""
        return read_runs(self.root)

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
        path = self.path(self.model_name(version))
        if atomic.folder_exists(path):
            return
        path = guard.check(path, "output.path", MODEL, within=self.path(MODELS))
        if not is_url(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_directory(path, MODEL, self.staging) as staging:
            write_model(staging, model, {"preprocessing": preprocessing})
