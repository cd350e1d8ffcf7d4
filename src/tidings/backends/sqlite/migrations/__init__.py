"""Numbered SQL migrations of the SQLite store."""
