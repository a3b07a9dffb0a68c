"""Reading Zarr chunks, with errors that name the store and the chunk."""

import dask.array as da
from dask.array.core import getter
from dask.base import tokenize
from zarr.storage import FsspecStore, LocalStore

_DAMAGED = "The chunk file is damaged or truncated: restore it from a copy, or rewrite the store"
_UNREADABLE = "The store could not be read: check that every worker can reach and read it"


class ChunkReadError(OSError):
    """A chunk of a Zarr array could not be read or decoded.

    Parameters
    ----------
    array : str
        The folder or URL of the Zarr array.
    chunk : str
        The chunk's key, as Zarr names it (e.g. ``c/3/0``).
    reason : str
        The original error, as ``"Type: message"``.
    damaged : bool, default=True
        Whether the chunk's bytes were read but are no valid data (else the store could not be
        read at all); decides the advice the message gives.
    """

    def __init__(self, array, chunk, reason, damaged=True):
        advice = _DAMAGED if damaged else _UNREADABLE
        super().__init__(f"cannot read chunk {chunk} of the Zarr array {array} (file "
                         f"{array}/{chunk}): {reason.rstrip('.')}. {advice}.")
        self.array, self.chunk, self.reason, self.damaged = array, chunk, reason, damaged

    def __reduce__(self):
        # Rebuilt from its parts where it is unpickled (on the client, from a worker): OSError's
        # default would call the class with the message alone.
        return type(self), (self.array, self.chunk, self.reason, self.damaged)


def as_dask_array(node):
    """Open the ``zarr.Array`` ``node`` as a Dask array, as ``dask.array.from_zarr`` does.

    The same chunks, graph layers and deterministic keys (the array opened twice has the same
    keys), but a chunk that fails to read or decode raises :class:`ChunkReadError`, naming the
    array and the chunk, instead of the codec's bare error.
    """
    # The getter is in the token so that these keys never stand for from_zarr's own tasks.
    name = "from-zarr-" + tokenize(node, None, {}, node.chunks, read_chunk)
    return da.from_array(node, chunks=node.chunks, name=name, getitem=read_chunk,
                         inline_array=False)


def read_chunk(array, selection, asarray=True, lock=None):
    """Dask's ``getter`` for one chunk of a Zarr array, raising :class:`ChunkReadError`."""
    try:
        return getter(array, selection, asarray=asarray, lock=lock)
    except MemoryError:  # the worker's state, not the chunk's
        raise
    except Exception as error:
        raise ChunkReadError(array_location(array), chunk_key(array, selection),
                             f"{type(error).__name__}: {error}",
                             damaged=not isinstance(error, OSError)) from error


def chunk_key(array, selection):
    """The key of the stored object (chunk, or shard) holding the first element of ``selection``.

    ``selection`` holds one slice per dimension, as a chunk task of :func:`as_dask_array` reads.
    """
    stored = array.shards or array.chunks
    coordinates = tuple(part.start // size for part, size in zip(selection, stored))
    return array.metadata.encode_chunk_key(coordinates)


def array_location(array):
    """The folder or URL of a Zarr array: its store's root, then its path in the store."""
    store = array.store
    if isinstance(store, LocalStore):
        root = str(store.root)
    elif isinstance(store, FsspecStore):
        root = store.fs.unstrip_protocol(store.path)
    else:
        root = str(store)
    return f"{root}/{array.path}" if array.path else root
