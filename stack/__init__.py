"""Local service stack (stack/stackctl.py), a package so tests can import it."""
