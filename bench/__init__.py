"""Benchmarks (`make bench`): the worker's overheads as ratios against bare Temporal.

Every figure is measured twice in the same run, on the same dev server: once through the real
worker (`worker.py` as a subprocess, `complete_activity.py` as agents run it) and once through a
minimal workflow and activity written here (`bench.bare`). See bench/README.md.
"""
