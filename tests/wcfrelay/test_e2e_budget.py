"""The SOAP bytes that all calls in flight hold together are bounded (``[gateway] max_soap_in_flight_bytes``):
past the bound a caller gets a 503 SOAP fault at once and nothing is held for it, and the budget comes back as
calls end. Both ways a call can travel are tried: carried by the front end (a body that fits inline) and by
aiohttp (a larger body)."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.test_front_end import read_response
from tests.support.gateway_process import TIMEOUT_FACTOR, GatewayProcess
from tests.wcfrelay.test_e2e_front_end import front_stats, host_for, result_of, soap_post
from tests.wcfrelay.test_e2e_inflight import release, started
from tests.wcfrelay.test_e2e_support import TNS, env11, soap_fault

#: A call holds its body twice for a moment (as read, and inside its link message): two calls of these sizes
#: fit one at a time, never two at once.
LIMIT = 200 * 1024


@pytest.fixture
def small_budget(gateway_factory, tmp_path) -> GatewayProcess:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"[gateway]\nmax_soap_in_flight_bytes = {LIMIT}\n")
    return gateway_factory("--config", str(cfg))


def blocking_call(padding: int) -> bytes:
    """A call of Block (which waits for ``release``) made ``padding`` bytes larger by whitespace in its Body."""
    return env11(f'<Block xmlns="{TNS}"/>' + " " * padding)


async def _call(gw: GatewayProcess, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(soap_post(gw, "budget", body))
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize(("padding", "by_front_end"), [(60 * 1024, True), (90 * 1024, False)],
                         ids=["front-end", "aiohttp"])
def test_a_call_past_the_budget_gets_503_and_the_budget_comes_back(small_budget: GatewayProcess, padding: int,
                                                                    by_front_end: bool) -> None:
    gw = small_budget
    started.clear()
    release.clear()

    async def run() -> None:
        first = await _call(gw, blocking_call(padding))  # held at the host: 2 × its size of the budget
        assert await asyncio.to_thread(started.wait, 10 * TIMEOUT_FACTOR)
        second = await _call(gw, blocking_call(padding))
        status, headers, body = await read_response(second[0])
        assert status == 503 and headers["content-type"].startswith("text/xml")
        fault = soap_fault(body)
        assert "too many messages in flight" in (fault["reason"] or "")
        release.set()
        status, _, body = await read_response(first[0])
        assert status == 200 and result_of(body) == "released"
        # Both calls gave their share back: the same call fits again, twice in a row.
        for _ in range(2):
            reader, writer = await _call(gw, blocking_call(padding))
            status, _, body = await read_response(reader)
            assert status == 200 and result_of(body) == "released"
            writer.close()
        for _, writer in (first, second):
            writer.close()

    try:
        with host_for(gw, "budget", slow=True):
            before = front_stats(gw)["carried"]
            asyncio.run(run())
            carried = front_stats(gw)["carried"] - before
    finally:
        release.set()
    assert carried == (4 if by_front_end else 0)  # which path the parametrisation tried
    assert gw.alive()
