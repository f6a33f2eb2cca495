"""Cluster tests: a real 3-node nats-server cluster per test (own configs,
ports in 24000-24999, temp store dirs), stopped by PID also on failure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _harness import NATS_SERVER, NatsCluster, Role  # noqa: E402


@pytest.fixture
def nats_cluster(tmp_path: Path):
    if not Path(NATS_SERVER).exists():
        pytest.fail("nats-server is not installed (scripts/test installs it)")
    cluster = NatsCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def roles():
    """Started roles register here; all are stopped by PID at the end."""
    started: list[Role] = []
    yield started
    for r in started:
        r.kill()
