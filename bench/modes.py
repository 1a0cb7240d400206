"""Sizes and durations of the three modes. ``full`` is the reference; ``quick`` fits in about three minutes;
``smoke`` only proves the machinery works (the test suite runs it) and its numbers mean nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass

MiB = 1 << 20
GiB = 1 << 30

__all__ = ["MODES", "GiB", "MiB", "Mode"]


@dataclass(frozen=True)
class Mode:
    name: str
    rounds: int
    # 1. bulk stream
    bulk_bytes: int
    bulk_msg: int
    # 2. ping-pong
    pp_size: int
    pp_seconds: float
    pp_warmup: int
    # 3. small HTTP
    http_seconds: int
    http_conns: tuple[int, ...]
    # 4. 1 MiB bodies
    big_body: int
    big_conns: int
    big_seconds: int
    # 5. SOAP (zeep -> Spyne)
    soap_seconds: float
    soap_warmup: int
    soap_in_flight: tuple[int, ...]
    # 6. connection setup
    setup_count: int
    setup_warmup: int
    # 7. scale
    scale_conns: int
    scale_listeners: int
    scale_entities: int
    scale_rounds: int
    scale_setup_count: int
    # 8. slow reader
    slow_bytes: int
    slow_rate: int  # bytes per second
    slow_rounds: int
    # 9. cluster (two nodes, one Redis): cross-node vs same-node
    cluster_setup_count: int
    cluster_bulk_bytes: int
    # profiling runs (only with --profile)
    profile_bulk_bytes: int
    profile_http_seconds: int
    profile_soap_seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


MODES = {
    "full": Mode(
        name="full", rounds=5,
        bulk_bytes=GiB, bulk_msg=64 * 1024,
        pp_size=256, pp_seconds=5.0, pp_warmup=500,
        http_seconds=5, http_conns=(1, 50),
        big_body=MiB, big_conns=4, big_seconds=5,
        soap_seconds=5.0, soap_warmup=100, soap_in_flight=(1, 20),
        setup_count=500, setup_warmup=20,
        scale_conns=10_000, scale_listeners=1_000, scale_entities=50, scale_rounds=5, scale_setup_count=200,
        slow_bytes=GiB, slow_rate=64 * MiB, slow_rounds=5,
        cluster_setup_count=500, cluster_bulk_bytes=GiB,
        profile_bulk_bytes=2 * GiB, profile_http_seconds=8, profile_soap_seconds=8.0,
    ),
    "quick": Mode(
        name="quick", rounds=5,
        bulk_bytes=128 * MiB, bulk_msg=64 * 1024,
        pp_size=256, pp_seconds=1.0, pp_warmup=200,
        http_seconds=1, http_conns=(1, 50),
        big_body=MiB, big_conns=4, big_seconds=1,
        soap_seconds=1.5, soap_warmup=50, soap_in_flight=(1, 20),
        setup_count=60, setup_warmup=10,
        scale_conns=500, scale_listeners=50, scale_entities=5, scale_rounds=5, scale_setup_count=40,
        slow_bytes=24 * MiB, slow_rate=24 * MiB, slow_rounds=5,
        cluster_setup_count=60, cluster_bulk_bytes=256 * MiB,
        profile_bulk_bytes=512 * MiB, profile_http_seconds=4, profile_soap_seconds=4.0,
    ),
    "smoke": Mode(
        name="smoke", rounds=1,
        bulk_bytes=2 * MiB, bulk_msg=64 * 1024,
        pp_size=256, pp_seconds=0.2, pp_warmup=20,
        http_seconds=1, http_conns=(1, 50),
        big_body=MiB, big_conns=2, big_seconds=1,
        soap_seconds=0.3, soap_warmup=5, soap_in_flight=(1, 20),
        setup_count=8, setup_warmup=2,
        scale_conns=40, scale_listeners=10, scale_entities=2, scale_rounds=1, scale_setup_count=8,
        slow_bytes=2 * MiB, slow_rate=8 * MiB, slow_rounds=1,
        cluster_setup_count=8, cluster_bulk_bytes=2 * MiB,
        profile_bulk_bytes=16 * MiB, profile_http_seconds=1, profile_soap_seconds=1.0,
    ),
}
