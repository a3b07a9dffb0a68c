"""``daskgmm.run``: its command line and its exit statuses, in this process.

``main`` is called as ``python -m daskgmm.run`` calls it. The job is real (a small table on
disk, checked by its pipeline); what running it does is replaced where a test needs an
outcome (a failure, an interrupt, skipped inputs), so no cluster starts. The shipped configs
run end to end in tests/e2e/test_runner_e2e.py.
"""

import logging

import pytest
import yaml

from conftest import make_blobs, write_zarr
from daskgmm import run
from daskgmm.config import ConfigError
from jobs_helpers import TINY_CLUSTER, run_main


@pytest.fixture
def job_file(tmp_path):
    """A valid fit job on a small table, writing ``tmp_path/out``."""
    write_zarr(tmp_path / "table.zarr", make_blobs(n_samples=120))
    job = {"pipeline": "fit", "input": {"path": str(tmp_path / "table.zarr")},
           "model": {"n_components": 2}, "output": {"path": str(tmp_path / "out")},
           "cluster": dict(TINY_CLUSTER)}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture
def executed(monkeypatch):
    """Replace running a checked job by ``outcome``: a summary to return, or an exception to
    raise. Yields the list of jobs it was asked to run."""
    calls = []

    def set_outcome(outcome):
        def execute(config, pipeline, prepared, verbose=False):
            calls.append(config)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        monkeypatch.setattr(run, "execute", execute)
        return calls

    return set_outcome


# ---------------------------------------------------------------- the command line


def test_the_parser_reads_every_option():
    args = run.build_parser().parse_args(
        ["job.yaml", "--set", "model.tol=0", "--resume", "--set", "output.path=x", "--verbose"])
    assert args.config == "job.yaml"
    assert args.overrides == ["model.tol=0", "output.path=x"]  # in the order given
    assert (args.resume, args.dry_run, args.verbose) == (True, False, True)
    defaults = run.build_parser().parse_args(["job.yaml"])
    assert (defaults.overrides, defaults.resume, defaults.dry_run, defaults.verbose) == (
        [], False, False, False)


@pytest.mark.parametrize("argv, words", [
    ([], "the following arguments are required: config"),
    (["job.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    (["job.yaml", "--set"], "argument --set: expected one argument"),
])
def test_a_bad_command_line_exits_2_with_the_usage(capsys, argv, words):
    with pytest.raises(SystemExit) as exited:
        run.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m daskgmm.run") and words in err


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exited:
        run.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m daskgmm.run")
    for option in ("--set", "--resume", "--dry-run", "--verbose"):
        assert option in out


# ---------------------------------------------------------------- exit statuses


def test_a_finished_job_exits_0_and_reports_its_summary(job_file, executed):
    calls = executed({"output": "somewhere", "model": {"n_components": 2}})
    status, out, err = run_main(job_file)
    assert status == run.EXIT_OK == 0
    assert len(calls) == 1 and calls[0].model.n_components == 2
    assert out.startswith(f"daskgmm fit job: {job_file} -> ")
    assert "done in " in out and "  output: somewhere" in out and "n_components 2" in out
    assert err == ""


def test_a_dry_run_exits_0_and_runs_nothing(job_file, executed, tmp_path):
    calls = executed(AssertionError("a dry run must not run the job"))
    status, out, _ = run_main(job_file, "--dry-run")
    assert status == 0 and calls == []
    assert out.startswith(f"job: fit ({job_file})") and "cluster: " in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, words", [
    (["--set", "model.n_components"], "--set: --set expects dotted.key=value"),
    (["--set", "nokey=1"], "nokey: unknown key"),
    (["--set", "model.n_components=0"], "model.n_components: "),
])
def test_a_mistake_in_the_job_exits_2_naming_the_file_and_key(job_file, executed, args,
                                                                words):
    calls = executed(AssertionError("a refused job must not run"))
    status, out, err = run_main(job_file, *args)
    assert status == run.EXIT_CONFIG == 2 and calls == [] and out == ""
    assert err.startswith(f"error: {job_file}: {words}"), err
    assert "Traceback" not in err


def test_a_missing_job_file_exits_2(tmp_path):
    status, _, err = run_main(tmp_path / "missing.yaml")
    assert status == 2
    assert err.startswith(f"error: {tmp_path / 'missing.yaml'}: cannot read the job file")


def test_a_failed_job_exits_1_with_one_paragraph(job_file, executed, tmp_path):
    executed(RuntimeError("the disk is full."))
    status, _, err = run_main(job_file)
    assert status == run.EXIT_FAILED == 1
    assert err == (f"daskgmm.run: the fit job ({job_file}) failed: RuntimeError: the disk is "
                   f"full. Nothing was written to {tmp_path / 'out'}. Rerun with --verbose for "
                   "the traceback.\n")


def test_a_failed_job_shows_its_traceback_with_verbose(job_file, executed):
    executed(RuntimeError("the disk is full"))
    status, _, err = run_main(job_file, "--verbose")
    assert status == 1
    assert "Traceback (most recent call last)" in err and "RuntimeError: the disk is full" in err
    assert err.strip().splitlines()[-1].startswith("daskgmm.run: the fit job")


def test_a_fault_while_checking_exits_1(job_file, monkeypatch):
    def prepare(args):
        raise OSError("the store vanished")

    monkeypatch.setattr(run, "prepare", prepare)
    status, _, err = run_main(job_file)
    assert status == 1
    assert err == (f"daskgmm.run: checking the job ({job_file}) failed: OSError: the store "
                   "vanished. Nothing was written. Rerun with --verbose for the traceback.\n")


def test_a_path_refused_while_running_exits_2(job_file, executed):
    executed(ConfigError("changed since the job was checked", "output.path"))
    status, _, err = run_main(job_file)
    assert status == 2
    assert err.startswith(f"error: {job_file}: output.path: changed since the job was checked")


def test_skipped_inputs_exit_3(job_file, executed):
    executed({"processed": "1 input(s): a.png", "skipped": {"b.png": "not a readable image"}})
    status, out, err = run_main(job_file)
    assert status == run.EXIT_SKIPPED == 3
    assert "skipped: b.png not a readable image" in out
    assert err == "1 input(s) skipped: see 'skipped' above\n"


def test_an_interrupted_job_exits_130(job_file, executed):
    executed(KeyboardInterrupt())
    status, _, err = run_main(job_file)
    assert status == run.EXIT_INTERRUPTED == 130
    assert err == "interrupted; no output was written\n"


def test_main_leaves_the_loggers_as_it_found_them(job_file, executed):
    executed({"output": "somewhere"})
    loggers = [logging.getLogger(name) for name in ("daskgmm", "py.warnings")]
    before = [(log.level, log.propagate, list(log.handlers)) for log in loggers]
    run_main(job_file, "--verbose")
    assert [(log.level, log.propagate, list(log.handlers)) for log in loggers] == before
