"""Fuzzing the runner's reading of job files: a mistake is exit status 2 and one message, always.

The shipped jobs are mutated (keys dropped, misspelt, moved or added; values of the wrong type
or out of range), random YAML documents are made up, and malformed text is written (random bytes,
broken syntax, non-UTF-8, alias bombs). ``daskgmm.run.main`` gets each job first with
``--dry-run``: a job that happens to be valid returns 0 and is only counted; one that is refused
must also be refused, with the same message, without ``--dry-run``. A refusal is status 2, an
``error: <file>: ...`` message, no traceback, and nothing created. Hypothesis runs derandomized,
so every run tries the same jobs, and the number of refusals is checked: the tests cannot pass
by finding every job valid.
"""

import copy
import os
import resource
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_blobs, write_zarr
from daskgmm import GaussianMixture
from daskgmm.config import load_config
from jobs_helpers import run_main


REPO = Path(__file__).resolve().parents[1]
PIPELINES = ("fit", "predict", "select", "anomaly", "segment")
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------ running a job


@contextmanager
def working_directory(path):
    """Run in ``path``, so relative paths a mutation makes up land where they are checked."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_in_folder(job_file, *args):
    """Call the runner in-process in the job's folder; return its status, stdout and stderr."""
    with working_directory(job_file.parent):
        return run_main(job_file, *args)


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def assert_refused(status, stdout, stderr, job_file):
    assert status == 2, f"status {status}:\n{stderr}"
    assert stderr.startswith(f"error: {job_file}: "), stderr
    assert "Traceback" not in stdout + stderr


def outcome(job_file, *args):
    """Run ``job_file``; return 0 for a valid job, 2 for a refused one (checked as such)."""
    folder = job_file.parent
    before = listing(folder)
    status, stdout, stderr = run_in_folder(job_file, "--dry-run", *args)
    assert listing(folder) == before
    if status == 0:
        assert "Traceback" not in stdout + stderr
        return status
    assert_refused(status, stdout, stderr, job_file)
    assert run_in_folder(job_file, *args) == (status, "", stderr)
    assert listing(folder) == before
    return status


def write_job(root, content):
    """Write a job file (a dict, YAML text or bytes) in a fresh folder; return its path.

    The folder is the job's working directory, so its relative output path lands there too.
    """
    path = Path(tempfile.mkdtemp(dir=root)) / "job.yaml"
    if isinstance(content, dict):
        content = yaml.safe_dump(content, sort_keys=False, allow_unicode=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def job_outcome(root, job, *args):
    """Write ``job`` to a fresh folder and run it; return the outcome."""
    return outcome(write_job(root, job), *args)


# ------------------------------------------------------------------ valid jobs to start from


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid_jobs(tmp_path_factory):
    """The shipped jobs, reading small inputs, writing ``out`` in their working directory."""
    data = tmp_path_factory.mktemp("data")
    table = make_blobs(n_samples=300)
    write_zarr(data / "table.zarr", table)
    write_zarr(data / "scene.zarr", np.zeros((16, 16, 3), dtype=np.uint8))
    GaussianMixture(2, random_state=0).fit(table).save(data / "model.zarr")
    jobs = {}
    for name in PIPELINES:
        job = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
        source = "scene.zarr" if name == "segment" else "table.zarr"
        job["input"]["path"] = str(data / source)
        job["output"]["path"] = "out"
        if name == "predict":
            job["model"]["load"] = str(data / "model.zarr")
        jobs[name] = job
    return jobs


def test_the_jobs_to_mutate_are_valid(root, valid_jobs):
    for job in valid_jobs.values():
        assert job_outcome(root, job) == 0


# ------------------------------------------------------------------ mutations of valid jobs

NAMES = ("pipeline", "input", "output", "model", "training", "checkpoint", "cluster", "select",
         "anomaly", "path", "n_components", "tol", "overwrite", "covariance_type", "address",
         "quantile", "data")
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=12),
    st.sampled_from(["full", "diag", "fit", "segment", "auto", "1e-3", "tcp://127.0.0.1:1", "",
                     ".", "/", "..", "~"]))
VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), children,
                      max_size=4),
    max_leaves=8)
EXTREMES = (-1, 0, -0.5, 0.5, 1.5, 2**31, 2**64, 10**30, -(10**30), float("inf"), float("-inf"),
            float("nan"), 1e308, -1e-308, "", "-1", "nan", "1e999")


def key_paths(node, prefix=()):
    """Every key of nested mappings, as a tuple of names from the top."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield prefix + (name,)
            yield from key_paths(value, prefix + (name,))


def mappings(node):
    """Every mapping in ``node``, itself included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from mappings(value)


def parent(job, path):
    for name in path[:-1]:
        job = job[name]
    return job


@st.composite
def typo(draw, word):
    """``word`` misspelt: a letter dropped, doubled, swapped or changed in case, or a suffix."""
    word = str(word)
    i = draw(st.integers(0, max(len(word) - 1, 0)))
    kind = draw(st.sampled_from(("drop", "double", "swap", "upper", "dash", "plural")))
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i + 1] + word[i:]
    if kind == "swap":
        return word[:i] + word[i + 1:i + 2] + word[i:i + 1] + word[i + 2:]
    if kind == "upper":
        return word.upper()
    if kind == "dash":
        return word.replace("_", "-") or "-"
    return word + "s"


def drop_key(draw, job, path):
    del parent(job, path)[path[-1]]


def misspell_key(draw, job, path):
    node = parent(job, path)
    node[draw(typo(path[-1]))] = node.pop(path[-1])


def retype_value(draw, job, path):
    parent(job, path)[path[-1]] = draw(VALUES)


def extreme_value(draw, job, path):
    parent(job, path)[path[-1]] = draw(st.sampled_from(EXTREMES))


def misplace_key(draw, job, path):
    value = parent(job, path).pop(path[-1])
    draw(st.sampled_from(list(mappings(job))))[path[-1]] = value


def wrap_in_list(draw, job, path):
    node = parent(job, path)
    node[path[-1]] = [node[path[-1]]]


def add_key(draw, job, path):
    name = draw(st.one_of(typo(path[-1]), st.sampled_from(NAMES), st.text(max_size=8)))
    draw(st.sampled_from(list(mappings(job))))[name] = draw(VALUES)


MUTATIONS = (drop_key, misspell_key, retype_value, extreme_value, misplace_key, wrap_in_list,
             add_key)


@st.composite
def mutated(draw, jobs):
    """A shipped job with one to three mutations."""
    job = copy.deepcopy(jobs[draw(st.sampled_from(PIPELINES))])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(key_paths(job))
        if not paths:
            break
        draw(st.sampled_from(MUTATIONS))(draw, job, draw(st.sampled_from(paths)))
    return job


def assert_mostly_refused(statuses, share):
    refused = statuses.count(2)
    assert refused + statuses.count(0) == len(statuses)
    assert refused >= share * len(statuses), f"only {refused} of {len(statuses)} refused"


def test_mutated_jobs_are_refused_with_a_message_or_valid(root, valid_jobs):
    statuses = []

    @settings(FUZZ, max_examples=90)
    @given(st.data())
    def check(data):
        statuses.append(job_outcome(root, data.draw(mutated(valid_jobs))))

    check()
    assert_mostly_refused(statuses, share=0.6)


def test_random_documents_are_refused(root):
    statuses = []
    documents = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), VALUES,
                                max_size=6) | VALUES

    @settings(FUZZ, max_examples=40)
    @given(documents)
    def check(document):
        statuses.append(outcome(write_job(root, yaml.safe_dump(document, allow_unicode=True))))

    check()
    assert_mostly_refused(statuses, share=1.0)


def test_random_text_and_bytes_are_refused(root):
    statuses = []
    yaml_like = st.text(alphabet=st.sampled_from(list("ab:-[]{},&*!|>'\"#%@`? \t\n\r\\\x85\x00")),
                        max_size=60)

    @settings(FUZZ, max_examples=40)
    @given(st.one_of(st.binary(max_size=60), yaml_like.map(str.encode)))
    def check(content):
        statuses.append(outcome(write_job(root, content)))

    check()
    assert_mostly_refused(statuses, share=1.0)


def test_random_overrides_are_refused_with_a_message_or_valid(root, valid_jobs):
    statuses = []
    keys = st.one_of(st.sampled_from([".".join(path) for path in key_paths(valid_jobs["fit"])]),
                     st.text(max_size=12))
    values = st.one_of(st.text(max_size=12), SCALARS.map(str))

    @settings(FUZZ, max_examples=30)
    @given(st.lists(st.tuples(keys, values), min_size=1, max_size=2))
    def check(overrides):
        arguments = [f"--set={key}={value}" for key, value in overrides]
        statuses.append(job_outcome(root, copy.deepcopy(valid_jobs["fit"]), *arguments))

    check()
    assert_mostly_refused(statuses, share=0.6)


# ------------------------------------------------------------------ malformed files, one by one


def alias_bomb(levels=12):
    """A YAML list whose aliases expand to 10**levels strings: short text, a huge structure."""
    anchors = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    anchors += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(anchors) + "]"


VALID = ("pipeline: fit\ninput: {path: x.zarr, generate: sample-table}\noutput: {path: out}\n"
         "model: {n_components: 2}\n")
MALFORMED = {
    "empty": b"",
    "only a comment": b"# nothing here\n",
    "a list at the top": b"- pipeline: fit\n- model: {}\n",
    "a scalar at the top": b"fit\n",
    "unbalanced bracket": b"pipeline: fit\nmodel: {n_components: [2}\n",
    "unclosed quote": b"pipeline: 'fit\n",
    "tab indentation": b"pipeline: fit\nmodel:\n\tn_components: 2\n",
    "duplicate key": VALID.encode() + b"pipeline: segment\n",
    "duplicate nested key": b"model: {tol: 1, tol: 2}\n",
    "unhashable key": b"? [a, b]\n: 1\n",
    "not UTF-8": b"pipeline: fit\ninput: {path: \xff\xfe.zarr}\n",
    "UTF-16": VALID.encode("utf-16"),
    "NUL byte": b"pipeline: fit\x00\n",
    "two documents": VALID.encode() + b"---\n" + VALID.encode(),
    "an integer of 5000 digits": VALID.replace("2}", "9" * 5000 + "}").encode(),
    "an impossible date": VALID.encode() + b"created: 2024-02-30\n",
    "an unknown tag": b"pipeline: !!python/object:os.system fit\n",
    "nested 1000 deep": b"[" * 1000 + b"]" * 1000,
    "a recursive alias": b"model: &m {n_components: *m}\n",
    "merge of a scalar": b"model: {<<: 3}\n",
    "an output path that names no folder": VALID.replace("{path: out}",
                                                         "{path: .., overwrite: true}").encode(),
    "a float too large": VALID.replace("n_components: 2", "n_components: 2, tol: " +
                                       "9" * 400).encode(),
}
# Run only in a process with bounded memory: were the bomb expanded, it would take it all.
BOMBS = {
    "an alias bomb at the top": alias_bomb().encode(),
    "an alias bomb as a value": VALID.replace("n_components: 2", "n_components: " + alias_bomb())
    .encode(),
    "an alias bomb as a list item": VALID.replace("{path: x.zarr", "{columns: [" + alias_bomb() +
                                                  "], path: x.zarr").encode(),
}
MEMORY_LIMIT = 8 * 2**30  # address space: generous for the imports, far below an expanded bomb


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_file_is_refused(root, content):
    assert outcome(write_job(root, content)) == 2


def test_merge_keys_are_read_not_refused(root):
    """Refusing duplicate keys must not refuse a merge (``<<``), whose keys may be overridden."""
    job_file = write_job(root, "pipeline: anomaly\ninput: &input {path: x.zarr, generate: "
                               "sample-table}\noutput: {path: out}\nmodel: {n_components: 2}\n"
                               "anomaly: {quantile: 0.01, data: {<<: *input, path: y.zarr}}\n")
    config = load_config(job_file)
    assert config.anomaly.data.path == "y.zarr"
    assert config.anomaly.data.generate == "sample-table"


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.slow
@pytest.mark.parametrize("content", [MALFORMED["not UTF-8"], MALFORMED["duplicate key"],
                                     *BOMBS.values()],
                         ids=["not UTF-8", "duplicate key", *BOMBS])
def test_malformed_file_is_refused_by_the_real_process(root, content):
    job_file = write_job(root, content)
    done = subprocess.run([sys.executable, "-m", "daskgmm.run", str(job_file)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit_memory)
    assert_refused(done.returncode, done.stdout, done.stderr, job_file)
    assert done.stdout == "" and listing(job_file.parent) == ["job.yaml"]
    assert len(done.stderr) < 1000  # one short message, however big the value
