"""Benchmarks: every speed or memory number the book quotes comes from here.

Run ``sydsgpt bench --help`` (or ``python -m sydsgpt.bench.<name>``). Each benchmark
prints a table and writes a JSON result that records the machine, torch version and date.
"""
