"""Benchmarks of schemacache (run ``python bench/run.py``; see ``bench/README.md``)."""
