"""Test harness shared by the tests, the bench and the demo: real servers, the real worker
and CLI as processes, and fake agents. Neither tests/ nor bench/ owns it."""
