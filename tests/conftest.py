from __future__ import annotations

import pytest

from tests.support.gateway_process import GatewayProcess, start_gateway


@pytest.fixture
def gateway(tmp_path) -> GatewayProcess:
    """A fresh single-node gateway with the embedded development namespace."""
    gw = start_gateway(tmp_path / "state")
    yield gw
    gw.stop()


@pytest.fixture
def gateway_factory(tmp_path):
    """Start gateways with extra command-line flags: ``gateway_factory("--config", path)``."""
    started: list[GatewayProcess] = []
    counter = iter(range(1000))

    def make(*extra: str, tls: bool = False, env: dict | None = None, state_dir=None) -> GatewayProcess:
        gw = start_gateway(state_dir or tmp_path / f"state{next(counter)}", *extra, tls=tls, env=env)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
