"""Benchmark scripts (run as `python bench/<name>.py`); shared helpers live in this package."""
