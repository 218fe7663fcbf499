"""Benchmarks of emis against raw PyTorch / transformers baselines; run `python benchmarks/run.py`."""
