"""wsistream.pipeline."""
