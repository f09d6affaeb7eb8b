"""What users look for first: the version, a licence file that matches the declared licence, a changelog, log levels."""

import re
import subprocess
import sys
from pathlib import Path

import wsistream

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    cmd = [sys.executable, "-m", "wsistream.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_version_license_changelog():
    pyproject = (ROOT / "pyproject.toml").read_text()  # tomllib is 3.11+, the project supports 3.10
    project = {k: re.search(rf'^{k} = "([^"]+)"', pyproject, re.M).group(1) for k in ("version", "license")}
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"wsistream {project['version']}"
    assert project["version"] == wsistream.__version__ and project["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert project["version"] in (ROOT / "CHANGELOG.md").read_text()


def test_log_level():
    bad = _run("--log-level", "loud", "recipes")
    assert bad.returncode == 2 and "--log-level" in bad.stderr
    ok = _run("--log-level", "debug", "recipes")
    assert ok.returncode == 0 and "phikon" in ok.stdout
