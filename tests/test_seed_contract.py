"""The seed documents' code runs verbatim against this checkout (the public API contract)."""

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "seed_snippets.py"


def test_seed_snippets_run_verbatim():
    assert TOOL.exists(), f"{TOOL} missing: tests need ../shared beside the checkout"
    out = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=600, check=False)
    assert out.stdout.strip().splitlines()[-1] == "4 passed, 0 failed", out.stdout + out.stderr
