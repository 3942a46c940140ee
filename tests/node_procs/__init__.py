"""Modules the node tests run in (or load into) node subprocesses, and their harness."""
