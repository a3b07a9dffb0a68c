"""What test_scale measures inside Dask worker processes: chunk reads, peak memory, spilling.

A module of its own, importing only NumPy and zarr: a worker that unpickles the counting store
or runs one of these functions imports this module, and must not import scikit-learn (or
daskgmm's estimator) with it, which would cost it ~130 MiB of its memory limit.
"""

import os
import threading
from collections import Counter

from zarr.storage import LocalStore

# Per process: chunk key -> number of reads since the last reset.
_reads = Counter()
_reads_lock = threading.Lock()


class CountingStore(LocalStore):
    """A Zarr ``LocalStore`` that counts, in the process using it, every read of a chunk."""

    async def get(self, key, prototype=None, byte_range=None):
        if key.startswith("c/"):
            with _reads_lock:
                _reads[key] += 1
        return await super().get(key, prototype, byte_range)


def chunk_reads():
    """This process's reads per chunk key since the last :func:`reset_chunk_reads`."""
    with _reads_lock:
        return dict(_reads)


def reset_chunk_reads():
    with _reads_lock:
        _reads.clear()


def import_kernels():
    """Import daskgmm's chunk kernels (and nothing of the estimator) in this process."""
    import daskgmm.kernels  # noqa: F401

    return True


def reset_peak_rss():
    """Reset this process's peak resident memory (``VmHWM``) to its current one (Linux)."""
    with open(f"/proc/{os.getpid()}/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss():
    """This process's peak resident memory in bytes since start or the last reset (Linux)."""
    with open(f"/proc/{os.getpid()}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def spilled(dask_worker):
    """What a worker has spilled: keys on its disk now and bytes it ever wrote there."""
    data = dask_worker.data
    written = sum(value for (label, unit), value in getattr(data, "cumulative_metrics", {}).items()
                  if label == "disk-write" and unit == "bytes")
    return {"keys_on_disk": len(getattr(data, "slow", ())), "bytes_written": int(written)}
