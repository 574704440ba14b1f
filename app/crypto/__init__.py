"""Thin wrappers over cryptography: pure functions of (key, data), no I/O, no clock."""
