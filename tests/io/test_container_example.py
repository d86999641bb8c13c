"""examples/container.py runs as documented and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "container.py"


def test_container_example_runs_and_reads_back_its_values(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), f"file://{tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "keys: ['config', 'runs', 'notes']" in out
    assert "runs[7].loss: 0.125" in out
    assert "missing key: no key 'missing'" in out
    assert "combined: baseline, checked [{'sample': 0}, {'sample': 1}, {'sample': 2}]" in out
