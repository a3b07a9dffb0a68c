"""What the job tests share: a user's inputs, small jobs, ways to run a job, digests of file trees.

A job runs in this process (:func:`run_pipeline`, a pipeline's ``prepare`` and ``run`` on the
current client; :func:`run_main`, the runner's ``main``), or as ``python -m daskgmm.run`` in a
subprocess (:func:`run_runner`, or :func:`start_runner` and :func:`finish_runner`).

Inputs are written the way a user would write them (``zarr`` and Pillow, never daskgmm's own
store functions, which may mark what they write as daskgmm's). A digest of a folder records
every entry below it without following links: a file's SHA-256, a link's target, a folder; two
digests compared name every entry added, removed or changed.
"""

import hashlib
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from conftest import kill_group, write_zarr  # noqa: F401 (shared)
from daskgmm.pipelines.training import Checkpoint
from daskgmm.run import main, pipeline_module

REPO = Path(__file__).resolve().parents[1]
RUNNER_SECONDS = 300

# An in-process cluster of one single-threaded worker: quick to start, nothing left running.
TINY_CLUSTER = {"n_workers": 1, "threads_per_worker": 1, "processes": False,
                "dashboard_address": ":0"}
TINY_MODEL = {"n_components": 2, "max_iter": 3, "random_state": 0}
IMAGE_SIDE = 24
TABLE_ROWS = 600


# ------------------------------------------------------------------ a user's inputs


def table_rows(n_rows=TABLE_ROWS, seed=0):
    """``(n_rows, 3)`` float64 rows from two well separated Gaussians."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, -6.0, 4.0]])
    return centres[np.arange(n_rows) % 2] + rng.normal(size=(n_rows, 3))


def images(n_images=2, side=IMAGE_SIDE, seed=0):
    """``(n_images, side, side, 3)`` uint8 RGB images of two colour regions with noise."""
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 40, 40], [40, 60, 210]])
    regions = (np.arange(side)[:, None] * 2 // side + np.zeros(side, dtype=int))
    pixels = colours[regions][None] + rng.normal(scale=8, size=(n_images, side, side, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_pngs(folder, n_images=2, side=IMAGE_SIDE):
    """Write RGB PNG files ``image-0.png``... with Pillow into ``folder``; return the folder."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, picture in enumerate(images(n_images, side)):
        Image.fromarray(picture).save(folder / f"image-{i}.png")
    return folder


def write_user_folder(path, names=("notes.txt", "src/main.py")):
    """A user's folder of small files (``src/main.py`` makes ``src/``); return its path."""
    path = Path(path)
    for name in names:
        file = path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"the user's own {name}\n")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ jobs


def job(pipeline, input_path, output_path, cluster=None, **sections):
    """A job as a dict: small model, tiny cluster, ``sections`` (``output`` merged) on top."""
    model = dict(TINY_MODEL)
    if pipeline == "select":
        del model["n_components"]
    spec = {
        "pipeline": pipeline,
        "input": {"path": str(input_path)},
        "model": model,
        "output": {"path": str(output_path), "overwrite": True},
        "cluster": dict(cluster or TINY_CLUSTER),
    }
    if pipeline == "select":
        spec["select"] = {"n_components": [1, 2], "covariance_types": ["full"]}
    if pipeline == "anomaly":
        spec["anomaly"] = {"quantile": 0.05}
    for name, section in sections.items():
        spec[name] = {**spec.get(name, {}), **section} if isinstance(section, dict) else section
    return spec


def write_job(path, spec):
    """Write a job dict as YAML at ``path``; return the path."""
    Path(path).write_text(yaml.safe_dump(spec, sort_keys=False))
    return Path(path)


class Crash(Exception):
    pass


class CrashingCheckpoint(Checkpoint):
    """The job's checkpoint, which dies right after its ``after``-th save."""

    def __init__(self, checkpoint, after):
        super().__init__(checkpoint.path, checkpoint.every, checkpoint.fingerprint,
                         checkpoint.enabled, checkpoint.guard)
        self.saves_left = after

    def save_fit(self, state):
        super().save_fit(state)
        self._count()

    def save(self, models, state):
        super().save(models, state)
        self._count()

    def _count(self):
        self.saves_left -= 1
        if self.saves_left == 0:
            raise Crash


def run_pipeline(spec, resume=False, crash_after=None):
    """Prepare and run a job (a dict) with its pipeline, on the current client; return it
    prepared.

    With ``crash_after``, the job first crashes right after that many checkpoint saves, then
    runs again resuming from its checkpoint.
    """
    from daskgmm.config import JobConfig

    config = JobConfig.from_dict(spec)
    pipeline = pipeline_module(config.pipeline)
    if crash_after is not None:
        crashing = pipeline.prepare(config, resume=resume)
        crashing.checkpoint = CrashingCheckpoint(crashing.checkpoint, crash_after)
        with pytest.raises(Crash):
            pipeline.run(crashing)
        resume = True
    prepared = pipeline.prepare(config, resume=resume)
    pipeline.run(prepared)
    return prepared


def start_runner(job_file, *args, runner=("-m", "daskgmm.run")):
    """Start ``python -m daskgmm.run JOB_FILE ARGS...`` (or another ``runner``) in its own
    process group; return the process, its stdout and stderr pipes of text."""
    return subprocess.Popen([sys.executable, *runner, str(job_file), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish_runner(process, timeout=RUNNER_SECONDS):
    """Wait for a started runner; return it as a ``subprocess.CompletedProcess``.

    A runner still going after ``timeout`` seconds is killed with its process group (its
    cluster's workers too), and fails the test.
    """
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        _, stderr = process.communicate()
        raise AssertionError(f"the job ran past {timeout} s:\n{stderr}") from None
    finally:
        kill_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_runner(job_file, *args, runner=("-m", "daskgmm.run"), timeout=RUNNER_SECONDS):
    """Run ``python -m daskgmm.run JOB_FILE ARGS...`` in a subprocess to its end; return it as
    a ``subprocess.CompletedProcess`` (see :func:`finish_runner`)."""
    return finish_runner(start_runner(job_file, *args, runner=runner), timeout)


def run_spec(tmp_path, spec, name="job.yaml"):
    """Write a job dict into ``tmp_path`` and run it in this process; return its exit status
    and its stdout and stderr joined."""
    status, out, err = run_main(write_job(tmp_path / name, spec))
    return status, out + err


def run_main(job_file, *args):
    """Run the job in this process; return its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main([str(job_file), *args])
    return status, out.getvalue(), err.getvalue()


def run_in_child(job_file, args, stdout_path, stderr_path, environ=None):
    """Entry of a child process: run the job, its stdout and stderr into files; exit its status.

    Meant for a ``forkserver`` child, which starts from a clean process (no threads of a cluster
    or client the parent may hold) and can be killed at any moment. ``environ`` is set first
    (the server's environment is the one it started with).
    """
    os.environ.update(environ or {})
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        status = main([str(job_file), *args])
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def is_complete_output(path):
    """Whether ``path`` holds a finished job's ``result.zarr`` (its record says complete)."""
    try:
        record = zarr.open_group(str(Path(path) / "result.zarr"), mode="r").attrs["daskgmm"]
    except Exception:  # a missing or unreadable result is not a finished output
        return False
    return bool(record.get("complete"))


# ------------------------------------------------------------------ digests of file trees


def _entry(path):
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_dir():
        return ("folder",)
    if path.is_file():
        return ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return ("other",)


def tree_digest(root):
    """Every entry below ``root`` (not following links) by its POSIX path relative to ``root``.

    A file maps to ``("file", sha256)``, a link to ``("link", target)``, a folder (empty or
    not) to ``("folder",)``. Entries that vanish while the tree is walked are left out.
    """
    root = Path(root)
    found = {}
    for parent, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(parent) / name
            try:
                found[path.relative_to(root).as_posix()] = _entry(path)
            except OSError:
                continue
    return found


def tree_changes(before, after):
    """What differs between two digests, as sorted lines ``added|removed|changed <path>``."""
    lines = [f"removed {name}" for name in before if name not in after]
    lines += [f"added {name}" for name in after if name not in before]
    lines += [f"changed {name}" for name in before
              if name in after and before[name] != after[name]]
    return sorted(lines)
