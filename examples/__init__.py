"""Runnable examples: `make demo` (examples/demo.py) and its shell-script agent."""
