"""Batch stores in a bucket: the store of :mod:`.batch`, kept with conditional writes.

In object storage a batch store holds::

    .daskgmm.json          its ownership marker (kind ``batch-store``), created once
    manifest.json          as on disk, but replaced only by a PUT conditional on the ETag it
                           was read with: of two runs changing it at once, on one machine or
                           two, one wins and the other reads it again and redoes its change
    runs/<run>.json        one object per run (an object cannot be appended to), created once
    results/<key>/         each input's result, a folder replaced as every output in a bucket
                           is (:mod:`daskgmm.object_output`)
    models/<version>.zarr  every model a run applied, likewise

No lock is needed: a change is read, applied and written back until no other run wrote in
between, so claims stay exclusive and each input is processed once. What a killed run leaves
inside a result or model folder is deleted by that folder's next write.
"""

import json
import random
import time

from daskgmm import conditional
from daskgmm.guard import url_root
from daskgmm.ownership import MARKER, MARKER_FORMAT, owner
from daskgmm.storage import filesystem, is_url, join

from .batch import BatchStore
from .batch_layout import MANIFEST, MODELS, RESULTS, STORE_KIND
from .batch_manifest import checked_manifest, empty_manifest

RUNS_PREFIX = "runs"
LAYOUT = frozenset({MARKER, MANIFEST, RUNS_PREFIX, RESULTS, MODELS})
# Attempts at a change of the manifest that other runs keep changing first, and the most
# seconds waited before the next (a random share of it, so that runs fall out of step).
CHANGE_ATTEMPTS, CHANGE_BACKOFF = 50, 0.5


def open_batch_store(root, config, run=None):
    """The batch store at ``root``: on disk (:class:`~.batch.BatchStore`) or in a bucket."""
    return (BucketBatchStore if is_url(root) else BatchStore)(root, config, run)


class BucketBatchStore(BatchStore):
    """A batch store in object storage (see the module's description)."""

    @staticmethod
    def resolve(root):
        return url_root(root)

    def staging_folder(self):
        return None  # each folder stages its own generation

    def path(self, name):
        return join(self.root, name)

    def exists(self):
        return self._listing() is not None

    def _listing(self):
        """The names at the top of the store, or None when there is nothing there."""
        fs, inner = filesystem(self.root)
        fs.invalidate_cache()
        try:
            names = {name.rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(inner, detail=False)}
        except FileNotFoundError:
            return None
        return names or None

    def survey(self, key):
        names = self._listing() or set()
        kind = None
        if MARKER in names:
            marker, _ = conditional.read(self.path(MARKER))
            kind = (marker or {}).get("kind", "unmarked")
        return kind, sorted(names - LAYOUT)

    def _read_tagged(self):
        manifest, etag = conditional.read(self.path(MANIFEST))
        if manifest is None:
            return empty_manifest(), None
        return checked_manifest(manifest, self.path(MANIFEST)), etag

    def read(self):
        return self._read_tagged()[0]

    def _lay_out(self):
        marker = {"format": MARKER_FORMAT, "kind": STORE_KIND, "target": self.root, **owner()}
        try:
            conditional.write(self.path(MARKER), marker, None)
        except conditional.Conflict:
            pass  # another run marked it first
        self.laid_out = True

    def change(self, edit):
        """Apply ``edit`` to the manifest and write it back if it changed, conditionally on
        its ETag; on a conflict the manifest is read again and ``edit`` applied anew."""
        if not self.laid_out:
            self._lay_out()
        for _ in range(CHANGE_ATTEMPTS):
            manifest, etag = self._read_tagged()
            before = json.dumps(manifest, sort_keys=True)
            result = edit(manifest)
            if json.dumps(manifest, sort_keys=True) == before:
                return result
            try:
                conditional.write(self.path(MANIFEST), manifest, etag)
                return result
            except conditional.Conflict:
                time.sleep(random.uniform(0, CHANGE_BACKOFF))
        raise RuntimeError(f"{self.path(MANIFEST)} was changed by other runs "
                           f"{CHANGE_ATTEMPTS} times in a row; try again")

    def log_runs(self, records):
        """Write each run's line as its own object, once (a later write of it changes
        nothing: the first one stands)."""
        fs, inner = filesystem(self.root)
        for record in records:
            body = json.dumps(record, sort_keys=True).encode()
            try:
                fs.pipe_file(f"{inner}/{RUNS_PREFIX}/{record['run']}.json", body, mode="create")
            except FileExistsError:
                pass

    def read_runs(self):
        fs, inner = filesystem(self.root)
        fs.invalidate_cache()
        names = fs.find(f"{inner}/{RUNS_PREFIX}")
        runs = [json.loads(fs.cat_file(name)) for name in names if name.endswith(".json")]
        return sorted(runs, key=lambda run: (run.get("started", ""), run["run"]))

    def leftovers(self, keep):
        return []  # a folder's next write deletes what a killed writer left in it
