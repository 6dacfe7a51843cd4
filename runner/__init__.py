"""The reference agent runner: task files in, agent processes out (agent_runner.py)."""
