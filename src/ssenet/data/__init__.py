"""Datasets, the embedded benchmark, transforms and label I/O."""
