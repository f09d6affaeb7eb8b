"""wsistream.mil."""
