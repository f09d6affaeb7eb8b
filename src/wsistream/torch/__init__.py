"""wsistream.torch."""
