"""wsistream.cli."""
