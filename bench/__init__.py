"""Benchmarks of the voice assistant: latency, barge-in, turn-taking, network, scale, quality. `python -m bench --help`."""
