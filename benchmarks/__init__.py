"""Benchmarks for the CIFAR-100 lab (run ``python -m benchmarks.benchmark --help``)."""
