"""wsistream.sampling."""
