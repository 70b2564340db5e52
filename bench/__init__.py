"""Benchmarks of the voice assistant: latency, baseline, barge-in, scale, memory. `python -m bench --help`."""
