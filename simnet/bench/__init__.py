"""Benchmarks: ``python -m simnet.bench NAME [options]``. Each prints figures and ratios.

Benchmarks measure; tests assert. Nothing here is a timed assertion.
"""
