"""README.md stays true: its first lines are the commands CI runs, and its Python example runs."""

import re
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def fenced_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_first_lines_are_the_commands_ci_runs():
    first = fenced_blocks("bash")[0].strip().splitlines()
    assert first[0] == "pip install . && python -m daskgmm.run configs/segment.yaml"
    assert first[1] == 'pip install ".[test]" && python -m pytest -q'
    assert README.index("```bash") < README.index("\n## ")
    ci_script = (REPO / ".ci" / "run").read_text().splitlines()
    assert first[0] in ci_script and first[1] in ci_script


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pixels = zarr.create_array("pixels.zarr", shape=(6000, 3), chunks=(1500, 3), dtype="float32")
    pixels[:] = np.random.default_rng(0).normal(size=(6000, 3))
    gaussian, online, bayesian = fenced_blocks("python")  # the later go on from the first's X
    namespace = {}
    exec(compile(gaussian, "README.md", "exec"), namespace)
    assert namespace["labels"].shape == (6000,)
    assert (tmp_path / "model.zarr").is_dir()
    assert namespace["same"].n_components == 8
    exec(compile(online, "README.md", "exec"), namespace)
    assert namespace["online"].n_iter_ == 2 and namespace["stream"].online_steps_ == 3
    exec(compile(bayesian, "README.md", "exec"), namespace)
    assert 1 <= namespace["used"] < 10
