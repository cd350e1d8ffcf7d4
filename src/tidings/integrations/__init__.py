"""Fitting tidings into web frameworks: FastAPI, Flask, Django (each behind its own extra).

Nothing is imported here: ``tidings.integrations.fastapi`` and the others import their framework
only when they are used themselves.
"""
