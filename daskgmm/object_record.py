"""The record of a folder in object storage, and what it says of each object there.

A folder that daskgmm replaces in a bucket (:mod:`daskgmm.object_output`) holds its record at
``.daskgmm.json``: the folder's kind, its committed generation (every metadata document and file
of the last complete write, and the chunk-key encoding of its chunks), every node and file that a
writer may have left, and the job writing it now. From the record alone, every object under the
folder is part of the committed generation, daskgmm's garbage, or someone else's
(:func:`classify`); readers open the committed generation through it
(:func:`committed_location`).
"""

import json
import warnings

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import FsspecStore, MemoryStore, StorePath

from . import conditional
from .generation_store import DEFAULT, ENCODINGS, METADATA, V2, GenerationStore
from .ownership import MARKER, MARKER_FORMAT
from .schema import ConfigError, shown
from .storage import access_denied, check_url, filesystem, join, storage_options

STAGING_PREFIX = ".daskgmm-staging-"
# An empty object a dry run writes and deletes to learn that the folder's place is writable.
PROBE_PREFIX = ".daskgmm-probe-"

def check_folder_url(url, key):
    """Refuse a URL where no folder can be committed: a scheme without conditional writes, or
    a bucket itself (``key``: the config key, for the message)."""
    check_url(url, key)
    if not conditional.supports(url):
        raise ConfigError("a folder in object storage is committed with conditional writes, "
                          f"which daskgmm makes on {', '.join(conditional.SCHEMES)}:// only; "
                          f"got {shown(url)}: write to s3:// (or any S3-compatible store) or "
                          "a local path", key)
    within = str(url).split("://", 1)[1].strip("/")
    if "/" not in within or within.rsplit("/", 1)[-1] in (".", ".."):
        raise ConfigError("must name the folder inside the bucket (e.g. "
                          f"s3://bucket/results/run), got {shown(url)}", key)


def check_writable(url, key):
    """Write and delete an empty probe object in the folder at ``url`` (for a dry run); a
    refusal is a ConfigError naming ``key``, the URL and the credentials found."""
    import uuid

    fs, inner = filesystem(url)
    probe = f"{inner.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        fs.pipe_file(probe, b"", mode="create")
        fs.rm(probe)
    except PermissionError as error:
        raise ConfigError(access_denied(url, error, "write"), key) from None


def record_url(url):
    """The URL of the record of the folder at ``url``."""
    return join(url, MARKER)


def is_record(record, kind=None):
    """Whether a ``.daskgmm.json`` document is a bucket folder's record (of ``kind``): a folder
    copied from disk holds an ownership marker there instead, which lists entries, not
    generations."""
    return (isinstance(record, dict) and record.get("format") == MARKER_FORMAT
            and "owned" in record and (kind is None or record.get("kind") == kind))


def new_record(url, kind):
    return {"format": MARKER_FORMAT, "kind": kind, "target": str(url), "committed": None,
            "owned": {"nodes": {}, "files": []}, "writer": None}


# ------------------------------------------------------------------ what an object is


def chunk_encoding(relative):
    """The chunk-key encoding that spells ``relative`` (a key below an array), or None."""
    parts = relative.split("/")
    if parts[0] == "c" and all(part.isdigit() for part in parts[1:]):
        return DEFAULT
    if len(parts) == 1 and all(part.isdigit() for part in relative.split(".")):
        return V2
    return None


def _node_of(key, nodes):
    """The deepest node of ``nodes`` that ``key`` is below, and the rest of the key."""
    best = None
    for node in nodes:
        if node == "" or key.startswith(node + "/"):
            if best is None or len(node) > len(best):
                best = node
    if best is None:
        return None, key
    return best, key[len(best) + 1:] if best else key


def classify(record, key):
    """What the object at ``key`` (relative to the folder) is: ``"committed"`` (part of the
    committed generation), ``"previous"`` (a chunk of the same array in the other encoding: the
    generation before, kept for its readers until the next write begins), ``"garbage"``
    (daskgmm's, left by a write that is over) or ``"foreign"`` (someone else's: never
    deleted)."""
    if key == MARKER:
        return "committed"
    committed = record.get("committed") or {}
    if key.startswith(PROBE_PREFIX):
        return "garbage"
    if key.startswith(STAGING_PREFIX):
        kept = committed and not committed["published"] and \
            key.startswith(committed["staging"] + "/")
        return "committed" if kept else "garbage"
    if key in committed.get("files", ()) or key in committed.get("documents", {}):
        return "committed"
    if key in record["owned"]["files"]:
        return "garbage"
    nodes = record["owned"]["nodes"]
    node, rest = _node_of(key, nodes)
    if node is None:
        return "foreign"
    if rest == METADATA:
        return "garbage"
    encoding = chunk_encoding(rest) if nodes[node] == "array" else None
    if encoding is None:
        return "foreign"
    if committed_nodes(committed).get(node) != "array":
        return "garbage"
    return "committed" if encoding == committed["encoding"] else "previous"


def committed_nodes(committed):
    if not committed:
        return {}
    return {key.rpartition("/")[0] if "/" in key else "": document["node_type"]
            for key, document in committed["documents"].items()}


def foreign_objects(url, kind, keys):
    """What of ``keys`` (every object under ``url``, relative) daskgmm did not write there for
    a ``kind`` folder; all of them when it holds no record of that kind."""
    record, _ = conditional.read(record_url(url))
    if not is_record(record, kind):
        return sorted(keys)
    return sorted(key for key in keys if classify(record, key) == "foreign")


def holds_output(url, keys):
    """Whether the objects ``keys`` under ``url`` are more than a record that committed
    nothing (what a job that failed before its first commit leaves)."""
    if not keys or set(keys) == {MARKER}:
        record, _ = conditional.read(record_url(url))
        return bool(keys) and record is not None and record.get("committed") is not None
    return True


def holds(url):
    """Whether there is a folder at ``url`` (see :func:`holds_output`)."""
    return holds_output(url, relative_keys(url))


def relative_keys(url):
    """Every object under the folder ``url``, relative to it (``""``: an object at ``url``)."""
    fs, inner = filesystem(url)
    fs.invalidate_cache()
    inner = inner.rstrip("/")
    return [name[len(inner) + 1:] for name in fs.find(inner)
            if name == inner or name.startswith(inner + "/")]


# ------------------------------------------------------------------ the committed generation


def final_documents(documents, encoding):
    """A generation's metadata documents as published: arrays' chunk-key encoding set, and
    every top group holding its members' documents as consolidated metadata."""
    final = {key: json.loads(document) for key, document in documents.items()}
    for document in final.values():
        document.pop("consolidated_metadata", None)  # a writer's own, made before publishing
        if document.get("node_type") == "array":
            document["chunk_key_encoding"] = ENCODINGS[encoding]
    nodes = {key.rpartition("/")[0] if "/" in key else "": key for key in final}
    for node, key in nodes.items():
        parent = node.rpartition("/")[0] if node else None
        if final[key].get("node_type") == "group" and (node == "" or parent not in nodes):
            final[key] = _consolidated(final, node)
    return final


def _consolidated(documents, group):
    """The document of ``group`` with its members' metadata inline, as zarr writes it."""
    prefix = f"{group}/" if group else ""
    buffers = default_buffer_prototype().buffer
    held = {key[len(prefix):]: buffers.from_bytes(json.dumps(document).encode())
            for key, document in documents.items() if key.startswith(prefix)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not part of the Zarr format 3 specification" yet
        zarr.consolidate_metadata(MemoryStore(held))
    return json.loads(held[METADATA].to_bytes())


def committed_location(url, options=None):
    """Where daskgmm's readers open the Zarr node at ``url``: through the committed generation
    of the folder holding it (if ``url`` is in one, it or its parent holding a record), else
    None (a plain store: zarr reads it as it is)."""
    for root in (str(url).rstrip("/"), str(url).rstrip("/").rpartition("/")[0]):
        if "://" not in root or root.endswith(":/"):
            continue
        record, _ = conditional.read(record_url(root), options)
        if not is_record(record):
            continue  # none, or the marker of a folder copied from disk: zarr reads it as is
        committed = record.get("committed") or {"documents": {}}
        documents = {key: json.dumps(document).encode()
                     for key, document in committed["documents"].items()}
        bucket = FsspecStore.from_url(root, storage_options=_options(root, options),
                                      read_only=True)
        store = GenerationStore(bucket, DEFAULT, documents)  # documents name their encodings
        relative = str(url).rstrip("/")[len(root):].strip("/")
        return StorePath(store, relative)
    return None


def _options(url, options):
    return storage_options(url) if options is None else options
