"""The benchmark scripts stay runnable: each one imports and parses its options.

The benchmarks themselves are too slow for the suite; this catches a script broken by a change
elsewhere (a helper moved between bench modules, a renamed daskgmm function) before someone
needs its numbers.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(path.name for path in BENCH.glob("bench_*.py")))
def test_bench_script_imports_and_shows_its_usage(script):
    result = subprocess.run([sys.executable, script, "--help"], cwd=BENCH, capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
