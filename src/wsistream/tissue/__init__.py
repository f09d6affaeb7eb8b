"""wsistream.tissue."""
