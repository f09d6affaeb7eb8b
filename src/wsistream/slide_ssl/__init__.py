"""wsistream.slide_ssl."""
