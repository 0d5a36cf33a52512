"""Reproducible benchmarks of Parley; each prints JSON (run `python -m bench.gateway`, see bench/README.md)."""
