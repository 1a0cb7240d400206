"""Benchmark suite: where the gateway stands against the direct path and nginx. Run ``python -m bench --help``."""
