"""What the batch tests share: a user's pictures, a batch segment job, its store's records.

Pictures are PNG files written with Pillow. A batch run is the segment pipeline run in this
process on the current client (:func:`run_batch`), or the runner in a subprocess
(``jobs_helpers.run_runner`` on :func:`write_job_file`).
"""

import json
import subprocess

import numpy as np
from PIL import Image

from daskgmm.config import BatchConfig, JobConfig
from daskgmm.pipelines import batch, segment

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])


def picture(seed, size=32, channels=3):
    """A ``size`` x ``size`` uint8 picture of three flat colour bands plus noise."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[:, None] * np.ones(size, dtype=int)
    bands = (rows > size // 3).astype(int) + (rows > 2 * size // 3)
    pixels = COLOURS[np.roll(bands, seed, axis=0)] + rng.normal(scale=6.0, size=(size, size, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if channels == 4:
        pixels = np.concatenate([pixels, np.full((size, size, 1), 255, np.uint8)], axis=-1)
    return pixels


def add_images(folder, *names, size=32, channels=3):
    """Write a PNG file per name (its pixels depend on the name); return their pixels."""
    folder.mkdir(exist_ok=True)
    written = {}
    for name in names:
        pixels = picture(sum(map(ord, name)) % 7, size, channels)
        Image.fromarray(pixels).save(folder / name)
        written[name] = pixels
    return written


def job(tmp_path, **sections):
    """A batch segment job over ``tmp_path/images`` into the store ``tmp_path/store``, as a
    dict; ``sections`` are merged into it."""
    data = {"pipeline": "segment", "input": {"path": str(tmp_path / "images")},
            "model": {"n_components": 3, "max_iter": 10}, "training": {"sample": 500},
            "output": {"path": str(tmp_path / "store"), "preview": False},
            "batch": {},
            "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False,
                        "dashboard_address": ":0"}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return data


def run_batch(data):
    """One batch run in-process on the module's cluster; return its summary."""
    return segment.run(segment.prepare(JobConfig.from_dict(data)))


def write_job_file(tmp_path, data):
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def manifest(tmp_path):
    return json.loads((tmp_path / "store" / "manifest.json").read_text())


def runs(tmp_path):
    """The store's log of runs, one record per run that claimed inputs."""
    return batch.BatchStore(tmp_path / "store", BatchConfig()).read_runs()


def dead_pid():
    """The id of a process that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
