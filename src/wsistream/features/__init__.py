"""wsistream.features."""
