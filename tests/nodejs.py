"""Node.js for the interop tests: the executable, with tests/node_modules installed.

The npm packages are pinned in `tests/package-lock.json`; when one is missing from
`tests/node_modules`, `npm ci` installs them all. A machine without node or npm skips the tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
MIN_NODE = 20


def node_with_packages(packages: tuple[str, ...], what: str) -> str:
    """The node executable, with `packages` installed from the lockfile; skips without node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, found in (("node", node), ("npm", npm)) if not found)
        why = f"the {what} tests need Node.js >= {MIN_NODE} and npm; {missing} not found on PATH"
        pytest.skip(reason=why)
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < MIN_NODE:
        why = f"the {what} tests need Node.js >= {MIN_NODE}; found {version.stdout.strip()}"
        pytest.skip(reason=why)
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
