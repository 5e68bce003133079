"""`pip install ./clients/python` gives an importable, typed package (PEP 561 py.typed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_a_typed_package(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(PROJECT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "tests"))
    wheels = tmp_path / "wheels"
    # No build isolation: builds offline with the setuptools and wheel of this environment.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        timeout=120,
    )
    [wheel] = list(wheels.glob("jetq-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("__init__", "config", "errors", "names", "producer", "protocol", "sync", "testing", "tracing"):
        assert f"jetq/{module}.py" in names
    assert "jetq/py.typed" in names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=120,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    shown = subprocess.run(
        [sys.executable, "-c", "import jetq, sys; print(jetq.__file__); print(jetq.__version__)"],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    ).stdout.split()
    assert shown[0].startswith(str(target)), shown
    assert shown[1] == "0.1.0"
