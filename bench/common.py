"""Helpers shared by the scale benchmarks (out-of-core, overhead, peers).

Data are rows drawn from a fixed mixture of Gaussians, generated block by block from
``(seed, block index)``, so a dataset of any size is cheap to build lazily on the workers, to
write to Zarr or to hold in memory (the same sizes and chunking give the same rows). Every script
fits them from the same explicit initial parameters (the generating means plus noise), so no
initialisation pass runs and every fit does exactly ``max_iter`` EM passes.
"""

import logging
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr
from zarr.storage import LocalStore

SEED = 20240607
MiB = 2.0**20
REPO = Path(__file__).resolve().parents[1]

# The worker-side read counter is the tests' own (one copy): it imports only zarr, so a worker
# that unpickles the counting store loads nothing heavier. Workers inherit this sys.path.
sys.path.insert(0, str(REPO / "tests"))
from worker_probes import CountingStore, chunk_reads, reset_chunk_reads  # noqa: E402, F401


# ---------------------------------------------------------------------------- data

def generating_mixture(n_features, n_components, seed=SEED, spread=4.0):
    """Return the weights, means and covariances (K, D, D) the rows are drawn from (the means
    drawn with standard deviation ``spread``: smaller, more overlap)."""
    rng = np.random.default_rng([seed, n_features, n_components])
    weights = 1.0 + rng.random(n_components)
    means = rng.normal(scale=spread, size=(n_components, n_features))
    factors = rng.normal(scale=0.6, size=(n_components, n_features, n_features))
    covariances = factors @ factors.transpose(0, 2, 1) + 0.2 * np.eye(n_features)
    return weights / weights.sum(), means, covariances


def mixture_rows(n_rows, n_features, n_components, block, dtype=np.float64, seed=SEED,
                 spread=4.0):
    """Rows ``block`` of the dataset: ``n_rows`` draws from the generating mixture.

    Each block holds a multinomial draw of rows from every component, component after
    component (EM does not care about the order of rows within a block).
    """
    weights, means, covariances = generating_mixture(n_features, n_components, seed, spread)
    rng = np.random.default_rng([seed, n_features, n_components, block])
    counts = rng.multinomial(n_rows, weights)
    rows = np.empty((n_rows, n_features), dtype=dtype)
    start = 0
    for count, mean, factor in zip(counts, means, np.linalg.cholesky(covariances)):
        rows[start:start + count] = rng.standard_normal((count, n_features)) @ factor.T + mean
        start += count
    return rows


def lazy_mixture(n_rows, n_features, n_components, chunk_rows, dtype=np.float64, seed=SEED,
                 spread=4.0):
    """A lazy Dask array of the dataset, one generated block per row chunk."""
    def block(block_info=None):
        info = block_info[None]
        return mixture_rows(info["chunk-shape"][0], n_features, n_components,
                            info["chunk-location"][0], dtype, seed, spread)

    chunks = (_row_chunks(n_rows, chunk_rows), (n_features,))
    return da.map_blocks(block, chunks=chunks, dtype=dtype, meta=np.empty((0, 0), dtype))


def _row_chunks(n_rows, chunk_rows):
    full, rest = divmod(n_rows, chunk_rows)
    return (chunk_rows,) * full + ((rest,) if rest else ())


def initial_parameters(n_features, n_components, seed=SEED):
    """Explicit ``weights_init``/``means_init``/``precisions_init`` (full) near the truth."""
    _, means, covariances = generating_mixture(n_features, n_components, seed)
    rng = np.random.default_rng([seed, 1])
    return {
        "weights_init": np.full(n_components, 1.0 / n_components),
        "means_init": means + rng.normal(scale=0.5, size=means.shape),
        "precisions_init": np.linalg.inv(2.0 * covariances),
    }


def write_zarr(path, n_rows, n_features, n_components, chunk_rows, dtype=np.float32):
    """Write the dataset to an uncompressed Zarr array at ``path``, a chunk at a time."""
    target = zarr.create_array(LocalStore(str(path)), shape=(n_rows, n_features),
                               chunks=(chunk_rows, n_features), dtype=dtype, compressors=None,
                               overwrite=True)
    source = lazy_mixture(n_rows, n_features, n_components, chunk_rows, dtype)
    da.store(source, target, lock=False, scheduler="threads")
    return target


# ---------------------------------------------------------------------------- counting reads

def open_counted(path):
    """Open the Zarr array at ``path`` lazily as Dask, through a :class:`CountingStore`."""
    return da.from_zarr(zarr.open_array(store=CountingStore(str(path), read_only=True), mode="r"))


def chunk_keys(array):
    """The store keys of all chunks of a 2-D Zarr array chunked along rows only."""
    return {f"c/{i}/0" for i in range(array.cdata_shape[0])}


# ---------------------------------------------------------------------------- workers

def balanced_persist(client, build):
    """Persist the array ``build()`` makes with its row chunks dealt evenly to the workers.

    ``persist`` alone may leave 6 of 10 chunks on one worker and 4 on the other; every pass then
    waits for the fuller worker (the scheduler does not move chunks this large to balance a
    pass), which would measure the placement rather than daskgmm. ``client.rebalance`` does not
    help: it balances memory only once a worker holds 30% of its limit. So the array is built
    again with a worker annotation: chunk ``i`` of ``n`` is made on worker ``i * workers // n``
    (runs of consecutive chunks, as daskgmm groups small chunks into one task) and stays there.
    """
    import dask
    from distributed import wait

    workers = sorted(client.scheduler_info()["workers"])
    n_chunks = build().numblocks[0]

    def holder(key):
        return [workers[key[1] * len(workers) // n_chunks]]

    with dask.annotate(workers=holder, allow_other_workers=False):
        array = build()
    data = client.persist(array, optimize_graph=False)
    wait(data)
    counts = chunks_per_worker(client, data)
    if len(counts) < min(n_chunks, len(workers)) or max(counts.values()) - min(counts.values()) > 1:
        raise RuntimeError(f"chunks not spread evenly over the workers: {counts}")
    return data


def chunks_per_worker(client, array):
    """How many chunks of a persisted ``array`` each worker holds."""
    holders = client.who_has(array)
    counts = {}
    for workers in holders.values():
        for worker in workers:
            counts[worker] = counts.get(worker, 0) + 1
    return counts


def import_daskgmm():
    """Import daskgmm's kernels in this process: run on fresh workers before a measurement.

    A worker that first meets daskgmm inside a task holds the GIL for a second or more
    importing it. Every block task of a pass also needs the pass's one small argument key (the
    mixture's coefficients), held by one worker; while that worker is importing, the other one
    waits for the key, keeps loading chunks it cannot use, and spills them. Warm workers show
    the steady state (reported as a daskgmm bug: ``bench_outofcore.py --cold`` reproduces it).
    """
    import daskgmm.kernels  # noqa: F401


# ---------------------------------------------------------------------------- memory

def reset_peak_rss():
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False where unsupported."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss():
    """This process's peak RSS in bytes since start or the last :func:`reset_peak_rss`."""
    with open(f"/proc/{os.getpid()}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def spill_report(dask_worker):
    """What a worker has spilled: keys on disk now and bytes ever written to disk."""
    data = dask_worker.data
    written = sum(value for (label, unit), value in getattr(data, "cumulative_metrics", {}).items()
                  if label == "disk-write" and unit == "bytes")
    return {"keys_on_disk": len(getattr(data, "slow", ())), "bytes_written": int(written)}


# ---------------------------------------------------------------------------- timing and report

def best_time(function, repeats):
    """The least wall time of ``repeats`` calls of ``function`` and its last result."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


class IterationLog(logging.Handler):
    """Collects daskgmm's per-iteration log records; calls ``on_iteration(n)`` after each one."""

    def __init__(self, on_iteration=None):
        super().__init__(logging.INFO)
        self.seconds = []
        self.on_iteration = on_iteration

    def emit(self, record):
        if not record.getMessage().startswith("iteration "):
            return
        self.seconds.append(float(record.args[-1]))
        if self.on_iteration is not None:
            self.on_iteration(len(self.seconds))

    def __enter__(self):
        logger = logging.getLogger("daskgmm")
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        logger = logging.getLogger("daskgmm")
        logger.removeHandler(self)
        logger.setLevel(self._level)


def log_progress(logger):
    """Send ``logger``'s progress to stderr; keep distributed's own INFO chatter out."""
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    logging.getLogger("distributed").setLevel(logging.WARNING)


def header():
    """Lines describing the run: command, machine, load, library versions, git commit."""
    import distributed
    import threadpoolctl

    import daskgmm

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "daskgmm"],
                           capture_output=True, text=True).stdout.strip()
    blas = ", ".join(
        f"{info['internal_api']} {info.get('version')} ({info['num_threads']} threads)"
        for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas")
    return [
        f"command: {' '.join([Path(sys.executable).name] + sys.argv)}",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{_total_memory() / 2**30:.0f} GiB, load average {os.getloadavg()[0]:.2f}",
        f"python {platform.python_version()}, numpy {np.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}, zarr {zarr.__version__}, blas: {blas}",
        f"daskgmm {commit}{' (daskgmm/ modified)' if dirty else ''}",
    ]


def _total_memory():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def table(rows, columns):
    """A Markdown table of ``rows`` (dicts) with the given ``(key, title, format)`` columns."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "| " + " | ".join("---" if fmt == "s" else "---:" for _, _, fmt in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(format(row[key], fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- what users see

def wall_times(function, repeats):
    """The wall time of each of ``repeats`` calls of ``function``, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def median_time(function, repeats):
    """The median wall time of ``repeats`` calls of ``function`` and its last result."""
    times, result = wall_times(function, repeats)
    return float(np.median(times)), result


class InitializationLog(IterationLog):
    """Collects daskgmm's "initialization <method>: N passes over the data (s)" records.

    ``passes`` and ``seconds`` hold one entry per initialisation (one per ``n_init``).
    """

    def __init__(self):
        super().__init__()
        self.passes, self.seconds = [], []

    def emit(self, record):
        if record.msg.startswith("initialization ") and "passes over the data" in record.msg:
            _, passes, seconds = record.args
            self.passes.append(int(passes))
            self.seconds.append(float(seconds))


def run_sampled(command, cwd=None, interval=0.02):
    """Run ``command``; return its wall seconds, peak RSS of its process tree, exit code, output.

    RSS is summed over the process and all its descendants and sampled every ``interval``
    seconds (a peak shorter than that can be missed). psutil is needed by the benchmarks only.
    """
    try:
        import psutil
    except ImportError:
        raise SystemExit("this benchmark samples memory with psutil: pip install psutil")
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout))
    reader.start()
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(psutil, process.pid))
        time.sleep(interval)
    seconds = time.perf_counter() - start
    reader.join()
    return {"seconds": seconds, "peak_rss": peak, "returncode": process.returncode,
            "output": "".join(output)}


def _tree_rss(psutil, pid):
    """Summed RSS of ``pid`` and its descendants; processes that end meanwhile count as 0."""
    try:
        root = psutil.Process(pid)
        processes = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total
