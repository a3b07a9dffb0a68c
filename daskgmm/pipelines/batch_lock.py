"""The lock of a batch store: a file created with ``O_CREAT | O_EXCL`` that names its holder.

A lock older than its timeout, or whose process is gone, is stale and taken over (see
:mod:`.batch` for when a run holds it).
"""

import json
import logging
import os
import time
import uuid
from contextlib import suppress
from pathlib import Path

from daskgmm import atomic
from daskgmm.ownership import process_is_gone, remove_owned

from .batch_layout import STAGING, read_text

logger = logging.getLogger(__name__)

# How often a run waiting for the lock looks again.
LOCK_POLL_SECONDS = 0.02


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
            text = read_text(self.path)
            if text is not None and self._is_stale(text):
                self._break(text)
            else:
                time.sleep(LOCK_POLL_SECONDS)
        return self

    def __exit__(self, *exc_info):
        if _holder(read_text(self.path)).get("token") == self.token:
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
        if read_text(moved) != stale_text:
            with suppress(FileExistsError):
                os.link(moved, self.path)
        else:
            logger.warning("took over the stale lock %s (%s)", self.path, stale_text)
        remove_owned(aside)
