"""Speed and memory benchmarks (each script prints ratios measured in one run; see README.md here).

A package, so `benchmarks.memory` and friends import by name even beside the repository-root `benchmarks.py` (v7.0's
export benchmark script, run as `python benchmarks.py`).
"""
