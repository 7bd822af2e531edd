"""Benchmarks that print figures (see bench/README.md); run each as `python bench/NAME.py`."""
