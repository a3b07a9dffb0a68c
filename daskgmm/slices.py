"""Slices of a block: how many rows the kernels work on at a time, and buffers for them.

A block is worked on one slice of rows at a time, so that a slice's design matrix and
responsibilities stay in the caches; the slice buffers are kept per thread and reused.
"""

import threading

import numpy as np

# Rows per slice: a slice's design matrix holds about this many elements (2 MiB of float64), so
# that it stays in the caches between the E-step and the statistics, and at most _MAX_SLICE_ROWS
# rows, so that its per-row temporaries stay under glibc's 128 KiB mmap threshold (bench/README.md).
_SLICE_ELEMENTS = 1 << 18
_MIN_SLICE_ROWS = 1024
_MAX_SLICE_ROWS = 16_000


def slice_length(n_design, n_rows):
    """Rows per slice: the design matrix near ``_SLICE_ELEMENTS``, and no more than the block."""
    rows = min(max(_SLICE_ELEMENTS // max(n_design, 1), _MIN_SLICE_ROWS), _MAX_SLICE_ROWS)
    return int(max(1, min(rows, n_rows)))


def row_slices(n_rows, step):
    """The slices of ``step`` rows (the last one shorter) that cover ``n_rows`` rows."""
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


_scratch = threading.local()


def thread_scratch(name, shape, dtype):
    """An uninitialised C-ordered array of ``shape``, kept for this thread and reused.

    The E-step's slice buffers hold a few MB. Allocated afresh for every block, they would be
    mapped and their pages faulted in again each time (glibc maps allocations above the
    128 KiB threshold that Dask's nanny pins), slowing the kernel (bench/README.md). Each
    thread has its own; the returned array is valid until this thread asks for ``name`` again.
    """
    size = int(np.prod(shape))
    buffers = _scratch.__dict__
    buffer = buffers.get(name)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = buffers[name] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)
