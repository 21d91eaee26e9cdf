"""Benchmarks: each module is a script (`python -m bench.NAME --help`); results and commands in RESULTS.md."""

import socket


def free_port() -> int:
    """A TCP port on this machine that no one listens on now (for an app a benchmark starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
