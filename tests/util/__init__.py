"""Shared helpers for loopback tests: ports, a fake downstream forward
server, an upstream test client and an in-process ``probetag serve``."""
