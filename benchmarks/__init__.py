"""Benchmarks for the CIFAR-100 lab: training_speed, time_to_accuracy, data_loading and flops
(run ``python -m benchmarks.<name> --help``; benchmarks/README.md describes them)."""
