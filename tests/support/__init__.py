"""Helpers the tests share (import them from here; ``conftest.py`` holds only fixtures and hooks)."""
