"""The client as a user gets it: ``python -m build`` makes an sdist and a wheel of the
distribution ``jetq-client`` whose metadata passes ``twine check --strict``; the wheel installs
into a fresh virtualenv (offline: its only dependency, nats-py, comes from ``.tools/wheels``,
put there by scripts/ensure-nats-server.sh) as the typed package ``jetq``, which enqueues a task
onto a real nats-server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Dict, Iterator

import pytest

from jetq.testing import NatsServer, create_task_stream_sync, stored_tasks_sync

PROJECT = Path(__file__).resolve().parents[1]
REPO = PROJECT.parents[1]
#: The nats-py wheel the fresh virtualenv installs from (scripts/ensure-nats-server.sh).
WHEELS = Path(os.environ.get("JETQ_TEST_WHEELS", REPO / ".tools" / "wheels"))
DISTRIBUTION = "jetq-client"
VERSION = "0.1.0"
MODULES = ("__init__", "config", "errors", "names", "producer", "protocol", "sync", "testing", "tracing",
           "message", "outbox", "outbox_schema", "testing_postgres", "django/__init__", "django/enqueue",
           "django/models", "django/migrations/__init__", "django/migrations/0001_jetq_outbox")


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """sdist and wheel of a copy of the project (the checkout stays free of build outputs).
    No build isolation: builds offline with this environment's pinned setuptools."""
    tmp = tmp_path_factory.mktemp("build")
    source = tmp / "source"
    shutil.copytree(PROJECT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "dist", "*.egg-info", "tests"))
    dist = tmp / "dist"
    # Without --sdist/--wheel, build makes the sdist and then the wheel *from the sdist*: a file
    # missing from the sdist fails here.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        check=True,
        timeout=180,
        stdout=subprocess.DEVNULL,
    )
    [sdist] = list(dist.glob("*.tar.gz"))
    [wheel] = list(dist.glob("*.whl"))
    yield Built(sdist=sdist, wheel=wheel)


def wheel_metadata(wheel: Path) -> Dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(name).decode())
    return {key: str(value) for key, value in message.items()}


def test_the_distribution_is_jetq_client_and_imports_as_jetq(built: Built) -> None:
    assert built.wheel.name == f"jetq_client-{VERSION}-py3-none-any.whl"
    assert built.sdist.name == f"jetq_client-{VERSION}.tar.gz"
    metadata = wheel_metadata(built.wheel)
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    names = set(zipfile.ZipFile(built.wheel).namelist())
    for module in MODULES:
        assert f"jetq/{module}.py" in names
    assert "jetq/py.typed" in names
    assert not any(n.startswith("tests/") for n in names), "the test suite must not be installed"
    with tarfile.open(built.sdist) as archive:
        members = {m.name for m in archive.getmembers()}
    assert f"jetq_client-{VERSION}/src/jetq/py.typed" in members
    assert f"jetq_client-{VERSION}/README.md" in members


def test_twine_accepts_the_metadata(built: Built) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(built.sdist), str(built.wheel)],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


ENQUEUE = """
import json, sys
import jetq
import jetq.outbox  # the outbox writer needs no database driver and no Django
assert "django" not in sys.modules

with jetq.Producer(nats_url=sys.argv[1], connect_timeout=5.0, request_timeout=5.0) as producer:
    task_id = producer.enqueue("emails", "send_email", {"to": "ada@example.com"})
print(json.dumps({"id": task_id, "file": jetq.__file__, "version": jetq.__version__}))
"""


def test_the_wheel_installs_in_a_fresh_virtualenv_and_enqueues(built: Built, tmp_path: Path, nats_server: NatsServer) -> None:
    nats_py = list(WHEELS.glob("nats_py-*.whl"))
    assert nats_py, f"no nats-py wheel in {WHEELS}: run scripts/ensure-nats-server.sh"
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # Offline, by name, as `pip install jetq-client` would resolve it from an index.
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
         "--find-links", str(built.wheel.parent), "--find-links", str(WHEELS), DISTRIBUTION],
        check=True,
        timeout=180,
    )
    stream = create_task_stream_sync(nats_server.url)
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JETQ_"))}
    result = subprocess.run(
        [str(python), "-c", ENQUEUE, nats_server.url],
        timeout=60,
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the project: `import jetq` must find the installed package
        env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["file"].startswith(str(env_dir)), shown
    assert shown["version"] == VERSION

    [stored] = stored_tasks_sync(nats_server.url, stream)
    assert stored.subject == "jetq.task.emails.send_email"
    assert stored.headers["Nats-Msg-Id"] == shown["id"]
    assert json.loads(stored.payload) == {"to": "ada@example.com"}
