"""A batch store survives runs SIGKILLed at random moments, alone and while another run is going.

Real ``python -m daskgmm.run`` processes on one segment batch store over 40 tiny PNG files: runs
of at most two inputs each are SIGKILLed at random moments (a seeded generator; the moments are
spread over a clean run's length, measured once: a third of the kills fall while a run starts
up and claims, the others in the time it works after its claim), some while a second run
overlaps them; then clean runs follow until one has nothing new. The store must then hold every
image done exactly once, with a complete result, and nothing else: no lock, claim, registered
run or staging entry, and a valid manifest and log in which every killed run that had claimed
inputs has a line.
"""

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from conftest import kill_group
from daskgmm import GaussianMixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N_IMAGES, SIDE = 40, 8
KILLED_RUNS = 20
# The kills at these positions come in pairs of overlapping runs.
OVERLAPPING = (3, 8, 13, 17)
LAYOUT = {".daskgmm.json", "manifest.json", "runs.jsonl", "results", "models", ".staging"}
RUN_SECONDS = 120
SEED = 20261128


@pytest.fixture(scope="module")
def batch_job(tmp_path_factory):
    """A job file over 40 new images, applying a model fitted once here; and the image names."""
    folder = tmp_path_factory.mktemp("kill-loop")
    rng = np.random.default_rng(SEED)
    colours = rng.integers(0, 256, size=(3, 3))
    names = [f"image-{i:02d}.png" for i in range(N_IMAGES)]
    (folder / "images").mkdir()
    for name in names:
        labels = rng.integers(0, 3, size=(SIDE, SIDE))
        pixels = np.clip(colours[labels] + rng.normal(scale=4, size=(SIDE, SIDE, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / "images" / name)
    sample = colours[rng.integers(0, 3, size=600)] + rng.normal(scale=4, size=(600, 3))
    GaussianMixture(3, random_state=0).fit(sample).save(folder / "model.zarr")
    data = {"pipeline": "segment", "input": {"path": str(folder / "images")},
            "model": {"load": str(folder / "model.zarr"), "n_components": None},
            "output": {"path": str(folder / "store"), "preview": True},
            "batch": {"max_inputs": 2, "lock_timeout": 10, "claim_timeout": 20},
            "cluster": {"n_workers": 1, "threads_per_worker": 1, "processes": False,
                        "dashboard_address": ":0"}}
    job_file = folder / "job.yaml"
    job_file.write_text(json.dumps(data))  # JSON is YAML
    return job_file, folder / "store", names


class Run:
    """One ``python -m daskgmm.run`` of the job, its log read as it is written.

    ``noticed`` is set once the run has logged its claim (from then on it holds claims and a
    registration, and writes results and the manifest; ``claimed_after`` says when), or has
    ended without one; ``logged_after`` is when it logged its end in the store.
    """

    def __init__(self, job_file, *options):
        self.began = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daskgmm.run", str(job_file), *options], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.pid = self.process.pid
        self.log, self.claimed_after, self.logged_after = [], None, None
        self.noticed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.log.append(line)
            if f"(process {self.pid}) claimed" in line:
                self.claimed_after = time.monotonic() - self.began
                self.noticed.set()
            elif f"(process {self.pid}) logged its end" in line:
                self.logged_after = time.monotonic() - self.began
        self.noticed.set()

    def end(self, kill=False):
        """SIGKILL the run (if ``kill`` and it is still going), or wait for it; return
        ``(status, stdout, stderr)``."""
        if kill:
            kill_group(self.process)
        status = self.process.wait(timeout=RUN_SECONDS)
        self.reader.join(timeout=RUN_SECONDS)
        return status, self.process.stdout.read(), "".join(self.log)

    def kill_at(self, moment):
        """SIGKILL the run ``moment`` s after it started; return (pid, killed, claimed)."""
        time.sleep(max(0.0, self.began + moment - time.monotonic()))
        status, _, _ = self.end(kill=True)
        return self.pid, status == -signal.SIGKILL, self.claimed_after is not None

    def kill_while_working(self, rng, work):
        """SIGKILL the run at a random moment of the ``work`` s after its claim (at once if it
        ended without one); return (pid, killed, claimed)."""
        self.noticed.wait(timeout=RUN_SECONDS)
        return self.kill_at((self.claimed_after or 0) + rng.uniform(0, work))


def kill_one(job_file, rng, claiming, work, attempt):
    """One run, killed while it starts up and claims (every third), or while it works."""
    run = Run(job_file)
    if attempt % 3 == 0:
        return [run.kill_at(rng.uniform(0, claiming))]
    return [run.kill_while_working(rng, work)]


def kill_two(job_file, rng, claiming, work):
    """A run, and a second one started while the first starts up; both killed while they work.
    Return their outcomes, and whether the first was still going when the second started."""
    first = Run(job_file)
    time.sleep(rng.uniform(0, claiming))
    overlapping = first.process.poll() is None
    second = Run(job_file)
    return [first.kill_while_working(rng, work), second.kill_while_working(rng, work)], \
        overlapping


def test_runs_killed_at_random_moments_leave_every_image_done_once(batch_job):
    job_file, store, names = batch_job
    began = time.monotonic()
    measured = Run(job_file)
    status, _, log = measured.end()
    assert status == 0 and measured.logged_after is not None, log
    typical = time.monotonic() - measured.began  # start-up, claim, two images, exit
    claiming, work = measured.claimed_after, measured.logged_after - measured.claimed_after

    rng = np.random.default_rng(SEED)
    outcomes, pairs = [], 0
    for attempt in range(3 * KILLED_RUNS):
        if sum(killed for _, killed, _ in outcomes) >= KILLED_RUNS and pairs >= 2:
            break
        # Past the planned pairs, more until two pairs were both killed (a loaded machine
        # may let a run of a pair finish first).
        if attempt in OVERLAPPING or (attempt > OVERLAPPING[-1] and pairs < 2):
            pair, overlapping = kill_two(job_file, rng, claiming, work)
            pairs += overlapping and all(killed for _, killed, _ in pair)
            outcomes += pair
        else:
            outcomes += kill_one(job_file, rng, claiming, work, attempt)
    killed = sum(killed for _, killed, _ in outcomes)
    print(f"{len(outcomes)} runs started, {killed} killed ({pairs} overlapping pairs), "
          f"{sum(c for _, k, c in outcomes if k)} killed after claiming, "
          f"{time.monotonic() - began:.0f} s")
    assert killed >= KILLED_RUNS and pairs >= 2, outcomes

    for _ in range(4):  # clean runs until nothing is new
        status, out, err = Run(job_file, "--set", "batch.max_inputs=null").end()
        assert status == 0, err
        if "nothing new to process" in out:
            break
    else:
        pytest.fail(f"clean runs still found new inputs:\n{out}")
    lines = check_store(store, names, outcomes)
    by_killed = sum(len(line["processed"]) for line in lines if line["status"] == "killed")
    print(f"{Counter(line['status'] for line in lines)} lines, {by_killed} images done by "
          f"killed runs; a run {typical:.1f} s (claims at {claiming:.1f} s, works "
          f"{work:.1f} s), "
          f"{time.monotonic() - began:.0f} s in all")


def check_store(store, names, outcomes):
    """Every image done once, with a complete result; nothing stray; every killed run logged.
    Return the lines of ``runs.jsonl``."""
    manifest = json.loads((store / "manifest.json").read_text())
    text = (store / "runs.jsonl").read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert sorted(manifest["inputs"]) == names
    for name, entry in manifest["inputs"].items():
        assert entry["result"] == f"results/{name}"
        result = zarr.open_group(str(store / entry["result"] / "result.zarr"), mode="r")
        assert result.attrs["daskgmm"]["complete"] is True
        assert result["labels"].shape == (1, SIDE, SIDE)
    processed = Counter(name for line in lines for name in line["processed"])
    assert processed == Counter(names)  # each exactly once, by a run that finished or was killed
    assert manifest["claims"] == {} and manifest["runs"] == {} and manifest["failed"] == {}
    assert {path.name for path in store.iterdir()} <= LAYOUT
    assert list((store / ".staging").iterdir()) == []
    assert {path.name for path in (store / "results").iterdir()} == set(names)

    # One line per run that claimed: "killed", or "ok" if it was killed once it had logged its
    # end; a run killed before it claimed has none.
    assert max(Counter(line["pid"] for line in lines).values()) == 1
    statuses = {line["pid"]: line["status"] for line in lines}
    killed = {pid for pid, was_killed, _ in outcomes if was_killed}
    claimed = {pid for pid, was_killed, claimed in outcomes if was_killed and claimed}
    assert claimed and all(pid in statuses for pid in claimed)
    assert {pid for pid, status in statuses.items() if status == "killed"} <= killed
    assert "killed" in statuses.values() and set(statuses.values()) <= {"ok", "killed"}
    return lines
