"""The Zarr store of one generation of an output in a bucket, written beside the committed one.

An object store has no rename, so an output there is replaced in place
(:mod:`daskgmm.object_output`), and the generation being written must leave the committed one
readable until it is itself committed. :class:`GenerationStore` makes zarr's writers do so
unchanged:

- the metadata documents (``zarr.json``) it is given are kept in memory, to be published after
  the commit; the committed ones stay in the bucket meanwhile, and the bucket's are never read;
- its chunks go under the chunk-key encoding that the committed generation does not use
  (``c/0/0`` or ``0.0``), so the two never share an object.

The same class, read-only and holding a committed generation's documents (taken from the
output's record), is what daskgmm's readers open: they see one whole generation even while its
documents are being published.
"""

import json

from zarr.storage import StorePath, WrapperStore

DEFAULT, V2 = "default", "v2"
METADATA = "zarr.json"
# Each encoding's entry in an array's metadata; the two spell every chunk's key differently.
ENCODINGS = {DEFAULT: {"name": "default", "configuration": {"separator": "/"}},
             V2: {"name": "v2", "configuration": {"separator": "."}}}


def other_encoding(encoding):
    """The chunk-key encoding a new generation uses: the one the committed one does not."""
    return V2 if encoding == DEFAULT else DEFAULT


def location(path):
    """What zarr is given to open ``path``: a :class:`~zarr.storage.StorePath` as it is, any
    other path as a string."""
    return path if isinstance(path, StorePath) else str(path)


def is_metadata(key):
    """Whether a store key is a node's metadata document."""
    return key.rsplit("/", 1)[-1] == METADATA


def chunk_prefix(node):
    """The prefix of every chunk key of the array at ``node`` under zarr's default encoding."""
    return f"{node}/c" if node else "c"


def as_encoded(node, key, encoding):
    """The object key of the chunk ``key`` (default encoding) of array ``node`` in ``encoding``."""
    if encoding == DEFAULT:
        return key
    indices = key[len(chunk_prefix(node)):].strip("/")
    name = ".".join(indices.split("/")) if indices else "0"
    return f"{node}/{name}" if node else name


class GenerationStore(WrapperStore):
    """A zarr store that keeps metadata in ``documents`` and writes chunks under ``encoding``.

    Parameters
    ----------
    store : zarr.abc.store.Store
        The bucket's store at the output's root.
    encoding : {"default", "v2"}
        The chunk-key encoding the chunks are written under (zarr itself writes the default).
    documents : dict of str to bytes, optional
        Metadata documents by key; new ones are added as zarr writes them.
    on_node : callable, optional
        Called with a node's key and type (``"array"`` or ``"group"``) before its metadata is
        first kept, so the output's record lists every node whose chunks may be in the bucket.
        Not pickled: the workers write chunks only.
    """

    def __init__(self, store, encoding, documents=None, on_node=None):
        super().__init__(store)
        self.encoding = encoding
        self.documents = dict(documents or {})
        self.on_node = on_node
        self.arrays = {node for node, kind in self.nodes().items() if kind == "array"}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["on_node"] = None
        return state

    def _with_store(self, store):
        return type(self)(store, self.encoding, self.documents, self.on_node)

    def nodes(self):
        """Every node these documents describe, by key, with its type."""
        return {key.rpartition("/")[0] if "/" in key else "":
                json.loads(document).get("node_type") for key, document in self.documents.items()}

    def _object_key(self, key):
        for node in self.arrays:
            prefix = chunk_prefix(node)
            if key == prefix or key.startswith(prefix + "/"):
                return as_encoded(node, key, self.encoding)
        return key

    async def get(self, key, prototype, byte_range=None):
        if is_metadata(key):
            document = self.documents.get(key)
            return None if document is None else prototype.buffer.from_bytes(document)
        return await self._store.get(self._object_key(key), prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key):
        if is_metadata(key):
            return key in self.documents
        return await self._store.exists(self._object_key(key))

    async def set(self, key, value):
        self._check_writable()
        if not is_metadata(key):
            await self._store.set(self._object_key(key), value)
            return
        document = value.to_bytes()
        node = key.rpartition("/")[0] if "/" in key else ""
        kind = json.loads(document).get("node_type")
        if key not in self.documents and self.on_node is not None:
            self.on_node(node, kind)
        self.documents[key] = document
        if kind == "array":
            self.arrays.add(node)

    async def set_if_not_exists(self, key, value):
        if not await self.exists(key):
            await self.set(key, value)

    async def delete(self, key):
        self._check_writable()
        if is_metadata(key):
            self.documents.pop(key, None)
        else:
            await self._store.delete(self._object_key(key))

    async def delete_dir(self, prefix):
        # zarr clears a node it recreates ("w"); only this generation's documents go: the
        # bucket's objects are the committed generation's, or were cleared before it began.
        self._check_writable()
        prefix = prefix.rstrip("/")
        for key in [key for key in self.documents if not prefix or key.startswith(prefix + "/")]:
            del self.documents[key]

    async def is_empty(self, prefix):
        return not any(True for _ in self._listed(prefix))

    def _listed(self, prefix):
        return sorted(key for key in self.documents if key.startswith(prefix))

    async def list(self):
        for key in self._listed(""):
            yield key

    async def list_prefix(self, prefix):
        for key in self._listed(prefix):
            yield key

    async def list_dir(self, prefix):
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        seen = set()
        for key in self._listed(prefix):
            name = key[len(prefix):].split("/", 1)[0]
            if name not in seen:
                seen.add(name)
                yield name
