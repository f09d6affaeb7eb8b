"""wsistream.transforms."""
