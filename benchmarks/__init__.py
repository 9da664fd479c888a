"""Benchmarks of training, retrieval, serving and data loading.

python -m benchmarks.run
"""
