"""Shared fixtures: the command-line binary the Python results are compared with, and the sample assets."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli() -> pathlib.Path:
    """The `tokensieve` binary (`TOKENSIEVE_BIN`, else the workspace's debug build). Missing is a failure: the
    comparisons with the command line are the point of these tests."""
    path = pathlib.Path(os.environ.get("TOKENSIEVE_BIN", REPO / "target" / "debug" / "tokensieve"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build` (make test does) or set TOKENSIEVE_BIN")
    return path


@pytest.fixture(scope="session")
def assets() -> pathlib.Path:
    """The sample videos and photos fetched by `make setup`."""
    root = os.environ.get("TOKENSIEVE_ASSETS")
    if not root or not pathlib.Path(root, "videos", "vtest.avi").is_file():
        pytest.fail("TOKENSIEVE_ASSETS is unset or lacks videos/vtest.avi: run `make setup` and source its env.sh")
    return pathlib.Path(root)


def run(cmd: list) -> str:
    """Runs a command, failing the test with its stderr when it fails."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout
