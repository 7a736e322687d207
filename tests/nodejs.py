"""Node.js for the interop tests: the executable, with tests/node_modules installed.

The npm packages are pinned in `tests/package-lock.json`; when one is missing from
`tests/node_modules`, `npm ci` installs them all. A machine without node or npm skips the tests,
except under `CI=true`, where Node.js is part of the build and its absence fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

TESTS = Path(__file__).parent
MIN_NODE = 20


def missing(why: str) -> NoReturn:
    """Skip a Node test saying why, or fail it under CI (which must have Node.js)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: a missing Node.js fails rather than skips)")
    pytest.skip(reason=why)


def node_with_packages(packages: tuple[str, ...], what: str) -> str:
    """The node executable, with `packages` installed from the lockfile; see `missing`."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        absent = " and ".join(name for name, found in (("node", node), ("npm", npm)) if not found)
        missing(f"the {what} tests need Node.js >= {MIN_NODE} and npm; {absent} not found on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < MIN_NODE:
        missing(f"the {what} tests need Node.js >= {MIN_NODE}; found {version.stdout.strip()}")
    if not all((TESTS / "node_modules" / name / "package.json").is_file() for name in packages):
        command = "ci" if (TESTS / "package-lock.json").is_file() else "install"
        done = subprocess.run(
            [npm, command, "--no-audit", "--no-fund"],
            check=False,
            cwd=TESTS,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.fail(
                f"npm {command} in {TESTS} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
    return node
