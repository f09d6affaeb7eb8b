"""wsistream.synthetic."""
