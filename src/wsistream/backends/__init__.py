"""wsistream.backends."""
