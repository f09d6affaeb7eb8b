"""wsistream.views."""
