"""Folders in object storage (outputs, checkpoints, saved models), replaced atomically without a
rename.

A folder at ``URL`` keeps the layout it has on disk, so ``zarr.open_group(URL/result.zarr)``
reads it as it is, plus two kinds of objects of daskgmm's own:

- ``URL/.daskgmm.json``, the *record*: the folder's kind, its *committed generation* (every
  metadata document, file and node of the last complete write), every node and file a writer
  may have left in the bucket, and the job writing it now;
- ``URL/.daskgmm-staging-<id>/``: a generation's files until they are published.

A job replaces the folder with :func:`replacing`, which

1. *claims* it: one conditional PUT names the job as the writer of the record. A live writer's
   claim is refused; a dead one's (its process gone, or not renewed for :data:`LEASE_EXPIRY`
   seconds) is taken over. The claim is renewed every :data:`LEASE_RENEWAL` seconds;
2. finishes publishing a committed generation that a killed job left, then deletes what dead
   writers left and the generation before the committed one (:meth:`Claim.collect`);
3. writes the new generation (:class:`Generation`): chunks under the chunk-key encoding the
   committed one does not use, metadata kept in memory, files under its staging prefix. Each
   zarr node is added to the record before its first chunk is written, so that whatever a
   killed writer left can be told from anyone else's objects;
4. *commits* it: one conditional PUT of the record, holding the new generation. This is the
   one step that makes it the folder's content; killed before it, a job leaves nothing any
   reader takes as complete, and the previous generation stays readable throughout;
5. *publishes* it: writes its metadata documents (arrays' first, then each group's, holding
   its members' as consolidated metadata, so zarr sees the group switch in one PUT), copies its
   files into place, and deletes the previous generation's documents and files; its chunks stay
   for the readers that opened it, until the next write begins.

daskgmm's own readers (:func:`daskgmm.object_record.committed_location`) read the metadata
from the record, so they see one whole generation even between the commit and the end of
publishing.
"""

import contextvars
import copy
import json
import logging
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import datetime, timezone

from zarr.storage import FsspecStore, StorePath

from . import conditional
from .generation_store import DEFAULT, GenerationStore, other_encoding
from .object_record import (
    STAGING_PREFIX, classify, committed_nodes, final_documents, is_record, new_record,
    record_url, relative_keys,
)
from .ownership import MARKER, owner, process_is_gone
from .schema import ConfigError
from .storage import filesystem, storage_options

logger = logging.getLogger(__name__)

# Seconds between renewals of a writer's claim, and after which an unrenewed one is dead.
LEASE_RENEWAL = 15
LEASE_EXPIRY = 120
# Attempts at a claim whose record another job replaced between our read and our write.
CLAIM_ATTEMPTS = 5


def _is_live(writer):
    """Whether the job named in a claim may still be writing."""
    if writer is None or process_is_gone(writer["host"], writer["pid"]):
        return False
    return time.time() - writer["time"] < LEASE_EXPIRY


# ------------------------------------------------------------------ a job's claim


class Claim:
    """A job's claim on the folder at ``url``: the record as last written, and its ETag.

    Every change to the record goes through :meth:`update`, a conditional PUT on the ETag
    this job last wrote; if it fails, another job has taken the folder over and this job
    stops writing.
    """

    def __init__(self, url, kind, record, etag):
        self.url = str(url).rstrip("/")
        self.kind = kind
        self.record = record
        self.etag = etag
        self.writer = record["writer"]
        self.lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # in the job's context: its storage section (endpoint, credentials) reaches the record
        self._renewal = threading.Thread(target=contextvars.copy_context().run,
                                         args=(self._renew,), daemon=True,
                                         name=f"daskgmm-claim-{self.writer['id'][:8]}")

    @classmethod
    def take(cls, url, kind, key):
        """Claim the folder at ``url`` (``key``: its config key, for refusals)."""
        writer = {"id": uuid.uuid4().hex, **owner()}
        for _ in range(CLAIM_ATTEMPTS):
            record, etag = conditional.read(record_url(url))
            if record is None:
                record = new_record(url, kind)
            elif not is_record(record, kind):
                raise ConfigError(f"{url} is not {kind} folder that daskgmm wrote; choose "
                                  "another path", key)
            elif _is_live(record.get("writer")):
                other = record["writer"]
                raise ConfigError(
                    f"{url} is being written by another job (host {other['host']}, pid "
                    f"{other['pid']}, claim renewed {time.time() - other['time']:.0f} s ago); "
                    "wait for it to finish or choose another path", key)
            record = {**record, "writer": writer}
            try:
                etag = conditional.write(record_url(url), record, etag)
            except conditional.Conflict:
                continue  # another job changed the record first: read it again
            claim = cls(url, kind, record, etag)
            claim._renewal.start()
            return claim
        raise ConfigError(f"{url}: other jobs kept changing its record; try again", key)

    def update(self, change):
        """Apply ``change`` (a function of a copy of the record) and write the record."""
        with self._lock:
            if self.lost:
                raise RuntimeError(f"another job took {self.url} over; this job stopped "
                                   "writing it")
            record = copy.deepcopy(self.record)
            change(record)
            record["writer"] = {**self.writer, "time": time.time()}
            try:
                self.etag = conditional.write(record_url(self.url), record, self.etag)
            except conditional.Conflict:
                self.lost = True
                raise RuntimeError(f"another job took {self.url} over while this job wrote "
                                   "it; this job stopped") from None
            self.record = record

    def _renew(self):
        while not self._stop.wait(LEASE_RENEWAL):
            try:
                self.update(lambda record: None)
            except RuntimeError:  # taken over: the job's next change of the record says so
                return
            except Exception as error:  # the store unreachable for now: the next renewal retries
                logger.warning("could not renew the claim on %s (%s)", self.url, error)

    def declare(self, node, kind):
        """Add a node to what the record owns, before any of its objects is written."""
        if self.record["owned"]["nodes"].get(node) != kind:
            self.update(lambda record: record["owned"]["nodes"].__setitem__(node, kind))

    def commit(self, generation):
        """Make ``generation`` the folder's content: one conditional PUT of the record."""
        documents = final_documents(generation.store.documents, generation.encoding)
        files = sorted(generation.files)

        def change(record):
            record["committed"] = {
                "id": generation.id, "encoding": generation.encoding,
                "documents": documents, "files": files, "staging": generation.staging,
                "published": False,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            record["owned"]["nodes"].update(generation.store.nodes())
            record["owned"]["files"] = sorted(set(record["owned"]["files"]) | set(files))

        self.update(change)

    def publish(self):
        """Write the committed generation's documents and files into place (again, after a
        killed job), then delete everything of the generations before it."""
        committed = self.record["committed"]
        if committed is None or committed["published"]:
            return
        fs, inner = filesystem(self.url)
        documents = committed["documents"]
        # Arrays' documents first: a group's consolidated one switches its readers at once.
        for key in sorted(documents, key=lambda key: documents[key]["node_type"] == "group"):
            fs.pipe_file(f"{inner}/{key}", json.dumps(documents[key], indent=2).encode())
        for name in committed["files"]:
            fs.copy(f"{inner}/{committed['staging']}/{name}", f"{inner}/{name}")
        self.update(lambda record: record["committed"].__setitem__("published", True))
        self.collect(keep_previous=True)

    def collect(self, keep_previous=False):
        """Delete every object of daskgmm's under the folder that the committed generation
        does not hold (what killed or replaced writes left); foreign objects stay. With
        ``keep_previous``, the previous generation's chunks stay too, so that a reader that
        opened it before the commit can still read it."""
        fs, inner = filesystem(self.url)
        deleted = ("garbage",) if keep_previous else ("garbage", "previous")
        garbage = [key for key in relative_keys(self.url)
                   if classify(self.record, key) in deleted]
        if garbage:
            fs.rm([f"{inner}/{key}" for key in garbage])
        committed = self.record["committed"]
        nodes = committed_nodes(committed)
        files = sorted(committed["files"]) if committed else []
        if self.record["owned"] != {"nodes": nodes, "files": files}:
            self.update(lambda record: record.__setitem__("owned", {"nodes": nodes,
                                                                    "files": files}))

    def release(self):
        """Stop renewing the claim and clear the writer from the record (best effort: a
        claim left behind expires)."""
        self._stop.set()
        with self._lock:
            if self.lost:
                return
            record = {**self.record, "writer": None}
            try:
                if record["committed"] is None and not record["owned"]["nodes"]:
                    fs, inner = filesystem(record_url(self.url))
                    fs.rm(inner)  # a first write that failed: nothing is left of it
                else:
                    self.etag = conditional.write(record_url(self.url), record, self.etag)
            except (conditional.Conflict, OSError):
                pass


class Generation:
    """What a job writes into a claimed folder: a zarr store at its root, and files.

    Attributes
    ----------
    root : zarr.storage.StorePath
        The folder's root, as zarr's writers take it (``root / "result.zarr"``).
    """

    def __init__(self, claim):
        committed = claim.record["committed"]
        self.id = uuid.uuid4().hex
        self.encoding = other_encoding(committed["encoding"]) if committed else DEFAULT
        self.staging = f"{STAGING_PREFIX}{self.id}"
        self.files = []
        self.url = claim.url
        bucket = FsspecStore.from_url(claim.url, storage_options=storage_options(claim.url),
                                      read_only=False)
        self.store = GenerationStore(bucket, self.encoding, on_node=claim.declare)
        self.root = StorePath(self.store, "")

    def write_file(self, name, data):
        """Write the bytes of a file that the folder holds at ``name`` once published."""
        fs, inner = filesystem(self.url)
        fs.pipe_file(f"{inner}/{self.staging}/{name}", data)
        self.files.append(name)


@contextmanager
def replacing(url, kind, key="output.path"):
    """Yield a :class:`Generation` of the folder at ``url``; it becomes the folder's content
    only if the block succeeds.

    ``url`` must have been cleared by the job's :class:`~daskgmm.guard.Guard`. A failing block
    leaves the committed generation as it was (its own objects are deleted); a killed one leaves
    objects the next job deletes.
    """
    claim = Claim.take(url, kind, key)
    try:
        claim.publish()
        claim.collect()
        generation = Generation(claim)
        yield generation
        claim.commit(generation)
        claim.publish()
    except BaseException:
        if not claim.lost:
            with suppress(Exception):  # the job's own error is the one to report
                claim.collect()
        raise
    finally:
        claim.release()


def remove(url, kind, key):
    """Delete the ``kind`` folder at ``url``: every object the record owns, the record last.
    ``url`` must have been cleared by the job's guard (it holds nothing foreign)."""
    claim = Claim.take(url, kind, key)
    try:
        fs, inner = filesystem(url)
        ours = [name for name in relative_keys(url)
                if name != MARKER and classify(claim.record, name) != "foreign"]
        if ours:
            fs.rm([f"{inner}/{name}" for name in ours])
        claim.record["committed"] = None
        claim.record["owned"] = {"nodes": {}, "files": []}
    finally:
        claim.release()
