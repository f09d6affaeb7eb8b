"""Run the throughput benchmark (same as `wsistream bench`); see wsistream/bench/run.py."""

import sys

from wsistream.cli.main import app

if __name__ == "__main__":
    sys.exit(app(["bench", *sys.argv[1:]]))
