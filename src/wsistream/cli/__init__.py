"""The ``wsistream`` command line (typer)."""
