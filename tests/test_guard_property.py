"""Property: whatever lies around a job's paths, the job changes nothing that is not its own.

Hypothesis draws a job (pipeline fit, segment, anomaly or select; overwrite or not; checkpoint on
or off; an ingest store set or not; the output path at a fresh place, inside, equal to or holding
an input, under a file, or written ``x/../y``) and a layout of what already lies at the job's
paths and beside them: a user's files, folders, links and Zarr stores, some named like
daskgmm's own (``result.zarr``, ``previews/``, a ``.daskgmm.json`` of garbage, hidden staging
names), and copies of real outputs of earlier jobs, some with a user's file added. Jobs use a
scheduler started once for the module and run in this process; about one in six runs in a
``forkserver`` child instead, is SIGKILLed after a drawn delay if it is still running, and is
then run again.

A path the job writes is its output, its checkpoint (when enabled) and, for image files, its
ingest store. A copy of an earlier job's output of the same kind, with daskgmm's marker and
nothing added, may be replaced there (an empty folder too, at the output with
``output.overwrite``); every other entry that was there before must be exactly as it was. A run
ends in status 0 (a complete output, no checkpoint left, nothing new outside the paths it
writes) or 2 (a message naming a path, and, unless an earlier run was killed, nothing changed).
"""

import multiprocessing
import os
import random
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from conftest import process_cluster
from daskgmm import GaussianMixture
from jobs_helpers import (
    is_complete_output,
    job,
    run_in_child,
    run_main,
    table_rows,
    tree_changes,
    tree_digest,
    write_pngs,
    write_zarr,
)

pytestmark = pytest.mark.slow

JOB_SECONDS = 60  # for a child to make its checkpoint, a killed job's tasks to end
MARKER = ".daskgmm.json"
PIPELINES = ("fit", "segment", "anomaly", "select")
# Modules a job imports, loaded once in the forkserver so that each child starts warm (pytest:
# a child imports the parent's main module).
PRELOAD = ["pytest", "jobs_helpers", "distributed", "PIL.Image"] + [
    f"daskgmm.pipelines.{name}" for name in PIPELINES]
# 100 examples: every kind of job, output place and layout is drawn many times over; single
# cases are pinned by tests/test_guard.py and tests/e2e/test_job_safety.py.
PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    report_multiple_bugs=False,
                    # Shrinking reruns jobs for minutes; the notes describe the failing example.
                    phases=(Phase.explicit, Phase.reuse, Phase.generate),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------ the module's fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return Path(os.path.realpath(tmp_path_factory.mktemp("guard")))


@pytest.fixture(scope="module")
def scheduler_client(root):
    """A client of a scheduler and one worker process, which every job of the module uses."""
    with process_cluster(root, n_workers=1) as (dask_client, _):
        yield dask_client


@pytest.fixture(scope="module")
def children():
    """The ``forkserver`` context killed jobs run in.

    Each child is forked from a server started clean, not from this process, whose client
    threads a forked copy would lack.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@pytest.fixture(scope="module")
def data(root):
    """The inputs every example copies: a table, a second table, PNG files, a mask, a model."""
    folder = root / "data"
    folder.mkdir()
    write_zarr(folder / "table.zarr", table_rows())
    write_zarr(folder / "scored.zarr", table_rows(200, seed=1))
    write_pngs(folder / "pngs")
    mask = np.ones((2, 24, 24), dtype=bool)
    mask[:, :3] = False
    write_zarr(folder / "mask.zarr", mask)
    GaussianMixture(2, random_state=0).fit(table_rows()).save(folder / "model.zarr")
    return folder


@dataclass
class Runner:
    """Runs jobs on the module's scheduler: in this process, or in a child to be killed."""

    children: object
    client: object
    folder: Path
    count: int = 0

    @property
    def cluster(self):
        return {"address": self.client.scheduler.address}

    def write(self, spec):
        self.count += 1
        path = self.folder / f"job-{self.count}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    def run(self, job_file, *args):
        """Run a job in this process; return ``(status, stderr)``."""
        status, _, stderr = run_main(job_file, *args)
        return status, stderr

    def start(self, job_file):
        """Start a job in a ``forkserver`` child; return the child and its stderr file."""
        self.count += 1
        stdout, stderr = (self.folder / f"child-{self.count}.{name}" for name in ("out", "err"))
        child = self.children.Process(target=run_in_child,
                                      args=(str(job_file), [], str(stdout), str(stderr)))
        child.start()
        return child, stderr

    def run_child(self, job_file, kill_after=JOB_SECONDS):
        """Run a job in a child, SIGKILLed after ``kill_after`` seconds if it is still running.

        Returns ``(status, stderr)``, status None if it was killed.
        """
        child, stderr = self.start(job_file)
        child.join(kill_after)
        killed = child.is_alive()
        if killed:
            self.kill(child)
        return (None if killed else child.exitcode), stderr.read_text() if stderr.exists() else ""

    def kill(self, child):
        """SIGKILL a child, then wait until the tasks it left on the cluster are gone."""
        child.kill()
        child.join()
        self.wait_until_idle()

    def wait_until_idle(self):
        """Return once no task of a killed job is still to run, or running on a worker.

        Workers finish a task whose client has gone; until then it may still write. (Lambdas:
        the scheduler and workers cannot import this module, so functions go by value.)
        """
        deadline = time.monotonic() + JOB_SECONDS
        while self.client.run_on_scheduler(lambda dask_scheduler: sum(
                task.state not in ("released", "forgotten", "erred")
                for task in dask_scheduler.tasks.values())) or any(
                self.client.run(lambda dask_worker: len(dask_worker.state.tasks)).values()):
            assert time.monotonic() < deadline, "a killed job's tasks never finished"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def runner(children, scheduler_client, root):
    folder = root / "jobs"
    folder.mkdir()
    return Runner(children, scheduler_client, folder)


@pytest.fixture(scope="module")
def templates(runner, data, root):
    """Real folders of earlier jobs, by kind: each pipeline's output, a checkpoint, an ingest store.

    Each is made in a child process, gone since, as an earlier job's would be; the checkpoint is
    the one a fit left when it was killed mid-fit.
    """
    folder = root / "templates"
    made = {}
    for pipeline in PIPELINES:
        source = data / ("pngs" if pipeline == "segment" else "table.zarr")
        output = folder / pipeline / "out"
        spec = job(pipeline, source, output, runner.cluster, checkpoint={"enabled": False})
        status, stderr = runner.run_child(runner.write(spec))
        assert status == 0, stderr
        made[f"output:{pipeline}"] = output
    made["ingest"] = folder / "segment" / "out.input.zarr"
    output = folder / "fitting" / "out"
    spec = job("fit", data / "table.zarr", output, runner.cluster,
               model={"max_iter": 100_000, "tol": 0.0})
    made["checkpoint"] = killed_mid_fit(runner, runner.write(spec), folder / "fitting" /
                                        "out.checkpoint")
    for path in made.values():
        assert path.is_dir(), f"no {path} was made"
    return made


def killed_mid_fit(runner, job_file, checkpoint):
    """Start the job, SIGKILL it once its checkpoint is there; return the checkpoint."""
    child, stderr = runner.start(job_file)
    deadline = time.monotonic() + JOB_SECONDS
    while not (checkpoint / "zarr.json").is_file():
        assert child.is_alive() and time.monotonic() < deadline, stderr.read_text()
        time.sleep(0.01)
    runner.kill(child)
    return checkpoint


# ------------------------------------------------------------------ what the strategies draw

# Output paths, relative to the example's folder; the first ones (fresh places) most often.
OUTPUT_PLACES = ["out"] * 12 + ["a/out"] * 4 + ["nonexist/../out"] * 3 + [
    "a/../out", "data/table.zarr", "data/table.zarr/sub", "data", "data/pngs", "data/pngs/out",
    "data/scored.zarr", "data/mask.zarr/x", "data/model.zarr", "notes.txt/out",
    "notes.txt/a/out"]
# Names of a user's files, some like daskgmm's own.
USER_NAMES = ("notes.txt", "src/main.py", "result.zarr/zarr.json", "model.zarr/zarr.json",
              "previews/image-0000.png", MARKER, ".hidden", "scores.csv")
# What is done to a copy of an earlier job's folder before the job runs.
TAINTS = ("pure",) * 6 + ("previews/notes.txt", "src/main.py", "result.zarr/notes.txt",
                          ".notes", "garbage marker", "no marker", "marker is a folder",
                          "marker is a link")
GARBAGE = (b"", b"{not json", b"[1, 2]", b'{"format": "not-daskgmm", "kind": "output"}')
LINKS = ("empty", "mine", "file", "dangling", "template")
TAINTED = st.sampled_from(TAINTS).flatmap(lambda taint: st.tuples(
    st.just(taint), st.sampled_from(GARBAGE) if taint == "garbage marker" else st.just(b"")))
TEMPLATES = tuple(f"output:{p}" for p in PIPELINES) + ("checkpoint", "ingest")
DEAD_PID = 999_999_999
FAST_MODEL = {"max_iter": 2}  # (init_params random_from_data fails on process workers)
KILL_AFTER = (0.1, 1.2)  # seconds after its start a job is killed, if still running


def contents(kind, absent, own=5):
    """What lies at a path where a job writes a ``kind`` folder: nothing ``absent`` times, a
    copy of daskgmm's own ``own`` times, in ``absent + own + 9``.

    Weights are given by repeating choices: hypothesis draws small integers far more often than
    large ones, so ``integers(0, 99) < 30`` would not be 30%.
    """
    same_kind = [t for t in TEMPLATES if t.split(":")[0] == kind]
    details = {
        "absent": st.just(("absent",)),
        "own": st.tuples(st.just("template"), st.sampled_from(same_kind), TAINTED),
        "template": st.tuples(st.just("template"), st.sampled_from(TEMPLATES), TAINTED),
        "empty": st.just(("empty",)),
        "file": st.just(("file",)),
        "folder": st.tuples(st.just("folder"), st.lists(st.sampled_from(USER_NAMES), min_size=1,
                                                        max_size=3, unique=True),
                            st.sampled_from(GARBAGE)),
        "zarr": st.just(("zarr",)),
        "result": st.just(("zarr like a result",)),
        "link": st.tuples(st.just("link"), st.sampled_from(LINKS)),
    }
    weighted = ["absent"] * absent + ["own"] * own + ["folder"] * 2 + [
        "template", "empty", "file", "zarr", "result", "link", "link"]
    return st.sampled_from(weighted).flatmap(details.__getitem__)


def siblings(name):
    """Hidden entries a user may keep beside the output, named like staging folders."""
    host = socket.gethostname()
    return [f".{name}.incomplete-{host}-{DEAD_PID}-deadbeef",
            f".{name}.replaced-{host}-{DEAD_PID}-cafe0001",
            f".daskgmm-staging-{'0' * 32}", f".daskgmm-retired-{'1' * 32}", f".{name}.swp"]


@st.composite
def examples(draw):
    """A job and the layout around its paths."""
    pipeline = draw(st.sampled_from(PIPELINES))
    spec = {"pipeline": pipeline, "overwrite": draw(st.booleans()),
            "checkpoint": draw(st.booleans()), "load": False, "scored": False, "mask": False,
            "ingest_to": None}
    if pipeline == "fit":
        spec["load"] = draw(st.sampled_from([False, False, False, True]))
    if pipeline == "anomaly":
        spec["scored"] = draw(st.booleans())
    if pipeline == "segment":
        spec["mask"] = draw(st.sampled_from([False, False, False, True]))
    places = OUTPUT_PLACES if spec["load"] else [p for p in OUTPUT_PLACES
                                                 if p != "data/model.zarr"]
    spec["output"] = place = draw(st.sampled_from(places))
    base = os.path.normpath(place)
    if pipeline == "segment":
        spec["ingest_to"] = draw(st.sampled_from(
            [None] * 5 + ["ingest.zarr"] * 2 + [f"{base}.checkpoint", f"{base}/in.zarr", base,
                                                "data/pngs/in.zarr", "data", "data/mask.zarr",
                                                "notes.txt/in.zarr"]))
    layout = {}  # built in this order: a folder on the way first
    if "a/" in place:
        layout["a"] = draw(st.sampled_from([("absent",), ("folder", ["notes.txt"], b""),
                                            ("file",)]))
    layout[base] = draw(contents("output", 6, own=8))
    layout[f"{base}.checkpoint"] = draw(contents("checkpoint", 20))
    layout[f"{base}.input.zarr"] = draw(contents("ingest", 20))
    if spec["ingest_to"] is not None:
        layout.setdefault(spec["ingest_to"], draw(contents("ingest", 10)))
    beside = draw(st.lists(st.sampled_from(siblings(Path(base).name)), max_size=2, unique=True))
    for name in beside:
        layout[os.path.join(os.path.dirname(base), name)] = (
            "folder", ["notes.txt", MARKER], draw(st.sampled_from(GARBAGE)))
    # About one job in six is started to be killed (some end or are refused before): a Random
    # seeded by hypothesis keeps that share (hypothesis's own draws lean to their simplest).
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    kill = rng.random() < 1 / 5
    spec["kill_after"] = rng.uniform(*KILL_AFTER) if kill else None
    spec["resume"] = kill and rng.random() < 0.5
    return spec, layout


# ------------------------------------------------------------------ building an example


@dataclass
class Example:
    """An example's folder, what was put there, and which of it is daskgmm's own."""

    folder: Path
    templates: dict
    owned: dict = field(default_factory=dict)  # relative path -> kind, of unaltered copies
    links: int = 0

    def rel(self, path):
        return os.path.relpath(os.path.realpath(path), self.folder)

    def put(self, name, content):
        """Put ``content`` at ``name``; skip it when a folder on the way is missing or a file."""
        path = self.folder / name
        if os.path.lexists(path) or not path.parent.is_dir():
            return
        kind, *details = content
        if kind == "template":
            self.put_template(path, *details)
        elif kind == "empty":
            path.mkdir()
        elif kind == "file":
            path.write_bytes(b"a user's file\n")
        elif kind == "folder":
            names, garbage = details
            for entry in names:
                (path / entry).parent.mkdir(parents=True, exist_ok=True)
                (path / entry).write_bytes(garbage if entry == MARKER else b"user data\n")
        elif kind == "zarr":
            write_zarr(path, np.arange(12.0).reshape(4, 3))
        elif kind == "zarr like a result":
            group = zarr.open_group(str(path), mode="w")
            result = group.create_group("result.zarr")
            result.attrs["daskgmm"] = {"complete": True, "pipeline": "fit"}
            result.create_array("labels", data=np.zeros(4, dtype=np.uint8))
        elif kind == "link":
            self.put_link(path, *details)

    def put_template(self, path, template, tainted):
        taint, garbage = tainted
        shutil.copytree(self.templates[template], path, symlinks=True)
        marker = path / MARKER
        if taint == "pure":
            if marker.is_file():  # only daskgmm's marker proves a folder is daskgmm's
                self.owned[self.rel(path)] = template.split(":")[0]
        elif taint == "garbage marker":
            marker.write_bytes(garbage)
        elif taint in ("no marker", "marker is a folder", "marker is a link"):
            marker.unlink(missing_ok=True)
            if taint == "marker is a folder":
                marker.mkdir()
            if taint == "marker is a link":
                marker.symlink_to(self.templates[template] / MARKER)
        else:
            (path / taint).parent.mkdir(parents=True, exist_ok=True)
            (path / taint).write_bytes(b"a user's file among a job's\n")

    def put_link(self, path, target):
        self.links += 1
        elsewhere = self.folder / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        real = elsewhere / f"{self.links}-{target}"
        if target == "empty":
            real.mkdir()
        elif target == "mine":
            self.put(real.relative_to(self.folder), ("folder", ["notes.txt", "src/a.py"], b""))
        elif target == "file":
            real.write_bytes(b"a user's file behind a link\n")
        elif target == "template":
            self.put_template(real, "output:fit", ("pure", b""))
        path.symlink_to(real)


def job_spec(example, spec, cluster):
    """The job file's content for a drawn ``spec`` in ``example``'s folder (absolute paths)."""
    folder = example.folder
    source = "data/pngs" if spec["pipeline"] == "segment" else "data/table.zarr"
    sections = {"checkpoint": {"enabled": spec["checkpoint"]},
                "output": {"overwrite": spec["overwrite"]}}
    if spec["load"]:
        sections["model"] = {"load": str(folder / "data/model.zarr")}
    if spec["scored"]:
        sections["anomaly"] = {"data": {"path": str(folder / "data/scored.zarr")}}
    inputs = {}
    if spec["mask"]:
        inputs["mask"] = str(folder / "data/mask.zarr")
    if spec["ingest_to"] is not None:
        inputs["ingest_to"] = f"{folder}/{spec['ingest_to']}"
    if inputs:
        sections["input"] = inputs
    config = job(spec["pipeline"], folder / source, f"{folder}/{spec['output']}", cluster,
                 **sections)
    config["model"].update(FAST_MODEL)
    if "select" in config:
        config["select"]["n_components"] = [2]
    return config


def written_paths(config, spec):
    """The job's paths as configured, by kind: output, checkpoint (if enabled), ingest store."""
    output = config["output"]["path"]
    paths = {"output": output}
    if spec["checkpoint"]:
        paths["checkpoint"] = str(Path(output).with_name(Path(output).name + ".checkpoint"))
    if spec["pipeline"] == "segment":
        paths["ingest"] = config["input"].get("ingest_to") or str(Path(output).with_name(
            Path(output).name + ".input.zarr"))
    return paths


def read_paths(config):
    """The job's inputs as configured."""
    found = [config["input"]["path"], config["input"].get("mask"),
             config["model"].get("load"),
             config.get("anomaly", {}).get("data", {}).get("path")]
    return [path for path in found if path]


def replaceable(example, spec, real):
    """Relative paths the job may replace or delete: its own kind of daskgmm folder, unaltered."""
    found = []
    for kind, rel in real.items():
        if example.owned.get(rel) == kind:
            found.append(rel)
        path = example.folder / rel
        empty = path.is_dir() and not path.is_symlink() and not any(path.iterdir())
        if kind == "output" and empty and spec["overwrite"]:
            found.append(rel)
    return found


# ------------------------------------------------------------------ checking the outcome


def inside(name, roots):
    return any(name == root or name.startswith(root + "/") for root in roots)


def ancestors(rels):
    found = set()
    for rel in rels:
        parts = Path(rel).parts
        found.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return found


def first_new(name, before):
    """The outermost entry on the way to ``name`` that was not there before."""
    parts = name.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if prefix not in before:
            return prefix
    return name


def shown(lines, count=12):
    more = f" ... and {len(lines) - count} more" if len(lines) > count else ""
    return ", ".join(lines[:count]) + more


def check_protected(before, after, kept_out):
    """Every entry that was there before, outside ``kept_out``, is exactly as it was."""
    changed = [line for line in tree_changes(before, after) if not line.startswith("added ")
               and not inside(line.split(" ", 1)[1], kept_out)]
    assert changed == [], f"the job changed what is not its own: {shown(changed)}"


def check_additions(before, after, real, finished):
    """Nothing is new outside the job's paths (and, while unfinished, its staging beside them)."""
    writes = [rel for kind, rel in real.items() if kind != "checkpoint" or not finished]
    parents = {os.path.dirname(rel) or "." for rel in real.values()}
    strays = []
    for name in sorted(set(after) - set(before)):
        new = first_new(name, before)
        if inside(new, writes) or new in ancestors(writes):
            continue
        if not finished and (os.path.dirname(new) or ".") in parents:
            continue  # a killed job's staging folder, beside a path it writes
        strays.append(name)
    assert strays == [], f"the job left entries outside its paths: {shown(strays)}"


def check_status(status, stderr, named):
    assert status in (0, 2), f"status {status}:\n{stderr}"
    if status == 2:
        assert any(path in stderr for path in named), f"no path named:\n{stderr}"
        assert "Traceback" not in stderr, stderr


def refused_key(stderr):
    """The config key a refusal names (``error: <file>: <key>: ...``)."""
    return stderr.split(": ")[2] if stderr.startswith("error: ") else "?"


def check_finished(example, spec, real, stderr):
    assert is_complete_output(example.folder / real["output"]), stderr
    if spec["checkpoint"] and not spec["load"]:
        assert not os.path.lexists(example.folder / real["checkpoint"]), \
            f"the checkpoint is left:\n{stderr}"


@PROPERTY
@given(examples())
def test_a_job_changes_nothing_but_its_own_paths(runner, data, templates, root, drawn):
    spec, layout = drawn
    folder = Path(tempfile.mkdtemp(dir=root, prefix="example-"))
    shutil.copytree(data, folder / "data", symlinks=True)
    (folder / "notes.txt").write_bytes(b"a user's notes\n")
    example = Example(folder, templates)
    for name, content in layout.items():
        example.put(name, content)
    config = job_spec(example, spec, runner.cluster)
    job_file = runner.write(config)
    paths = written_paths(config, spec)
    real = {kind: example.rel(path) for kind, path in paths.items()}
    kept_out = replaceable(example, spec, real)
    named = {form for path in list(paths.values()) + read_paths(config)
             for form in (path, os.path.normpath(path), os.path.realpath(path))}
    before = tree_digest(folder)
    note(f"job: {config}\nlayout: {layout}\nwrites: {real}\nreplaceable: {kept_out}")

    if spec["kill_after"] is None:
        status, stderr = runner.run(job_file)
    else:
        status, stderr = runner.run_child(job_file, spec["kill_after"])
    after = tree_digest(folder)
    killed = status is None
    note(f"first run: {'killed' if killed else f'status {status}'}\n{stderr}")
    check_protected(before, after, kept_out)
    check_additions(before, after, real, finished=status == 0)
    if killed:
        args = ["--resume"] if spec["resume"] else []
        status, stderr = runner.run(job_file, *args)
        after = tree_digest(folder)
        note(f"second run: status {status}\n{stderr}")
        check_protected(before, after, kept_out)
        check_additions(before, after, real, finished=status == 0)
    elif status == 2:
        changes = tree_changes(before, after)
        assert changes == [], f"a refused job changed files: {shown(changes)}\n{stderr}"
    check_status(status, stderr, named)
    event(("killed, then " if killed else "") + ("finished" if status == 0 else "refused"))
    if status == 0 and kept_out:
        event("finished where a folder could be replaced")
    if status == 2:
        event(f"refused for {refused_key(stderr)}")
    if status == 0:
        check_finished(example, spec, real, stderr)
    shutil.rmtree(folder)
