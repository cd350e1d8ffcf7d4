"""Testing helpers for applications built on tidings, and the contract suite for backends.

``tidings.testing.contract`` holds the backend contract suite (it needs pytest).
"""
