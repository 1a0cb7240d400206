"""Listener-side HTTP: request view and the inline-versus-rendezvous decision (spec §1.3, §2.4, §2.7)."""

from __future__ import annotations

import asyncio
import json

import pytest

from hybrid.client.http import (
    RelayedHttpRequest,
    RelayedHttpResponse,
    at_least_one_fragment,
    plan_response,
    status_description,
)
from hybrid.protocol.messages import INLINE_BODY_LIMIT, Request, encode, parse_message


async def _collect(chunks):
    return [c async for c in chunks]


async def test_small_known_body_goes_inline_with_one_body_message():
    plan = await plan_response("r1", RelayedHttpResponse(200, headers={"Content-Type": "text/plain"}, body=b"hello"))
    assert plan.inline and plan.body == b"hello"
    sent = json.loads(encode(plan.response))["response"]
    assert sent == {
        "requestId": "r1",
        "statusCode": 200,
        "statusDescription": "OK",
        "responseHeaders": {"Content-Type": "text/plain"},
        "body": True,
    }


async def test_body_of_exactly_the_limit_stays_inline_one_more_byte_does_not():
    at_limit = await plan_response("r", RelayedHttpResponse(body=b"x" * INLINE_BODY_LIMIT))
    assert at_limit.inline
    over = await plan_response("r", RelayedHttpResponse(body=b"x" * (INLINE_BODY_LIMIT + 1)))
    assert not over.inline and over.response.body
    assert b"".join(await _collect(over.stream)) == b"x" * (INLINE_BODY_LIMIT + 1)


async def test_empty_body_is_sent_as_body_false():
    plan = await plan_response("r", RelayedHttpResponse(204, body=b""))
    assert plan.inline and plan.response.body is False


async def test_head_never_carries_a_body():
    plan = await plan_response("r", RelayedHttpResponse(200, body=b"x" * 100_000), head=True)
    assert plan.inline and plan.response.body is False


async def test_short_stream_that_ends_quickly_is_buffered_inline():
    async def gen():
        yield b"a"
        yield "b"
        yield bytearray(b"c")

    plan = await plan_response("r", RelayedHttpResponse(body=gen()))
    assert plan.inline and plan.body == b"abc"


async def test_sync_iterable_body_is_accepted():
    plan = await plan_response("r", RelayedHttpResponse(body=[b"a", b"b"]))
    assert plan.inline and plan.body == b"ab"


async def test_large_stream_goes_to_a_rendezvous_without_losing_bytes():
    chunks = [bytes([i]) * 10_000 for i in range(20)]

    async def gen():
        for c in chunks:
            yield c

    plan = await plan_response("r", RelayedHttpResponse(body=gen()))
    assert not plan.inline
    assert b"".join(await _collect(plan.stream)) == b"".join(chunks)


async def test_slow_stream_goes_to_a_rendezvous_after_the_flush_timeout():
    more = asyncio.Event()

    async def gen():
        yield b"first"
        await more.wait()
        yield b"second"

    plan = await plan_response("r", RelayedHttpResponse(body=gen()), flush_timeout=0.05)
    assert not plan.inline and plan.response.body
    received = []
    async for chunk in plan.stream:
        received.append(chunk)
        more.set()
    assert received == [b"first", b"second"]


async def test_slow_stream_that_ends_without_more_data():
    release = asyncio.Event()

    async def gen():
        yield b"only"
        await release.wait()

    plan = await plan_response("r", RelayedHttpResponse(body=gen()), flush_timeout=0.05)
    release.set()
    assert await _collect(plan.stream) == [b"only"]


async def test_bad_body_type_is_a_type_error():
    with pytest.raises(TypeError):
        await plan_response("r", RelayedHttpResponse(body=42))  # type: ignore[arg-type]


async def test_an_empty_stream_still_makes_one_message():
    async def nothing():
        return
        yield b""  # pragma: no cover

    assert await _collect(at_least_one_fragment(nothing())) == [b""]
    assert await _collect(at_least_one_fragment(_agen([b"a", b"", b"b"]))) == [b"a", b"b"]


async def _agen(items):
    for item in items:
        yield item


def test_status_description_defaults_and_sanitises():
    assert status_description(404, None) == "Not Found"
    assert status_description(299, None) == ""
    assert status_description(200, "Fine\r\nX-Evil: 1") == "Fine  X-Evil: 1"


async def test_request_view_splits_target_into_suffix_and_query():
    message = parse_message(
        encode(
            Request(
                address="ws://gw/$hc/myhc?sb-hc-action=request&sb-hc-id=1",
                id="1",
                method="POST",
                request_target="/myhc/abc/def?x=1&y",
                request_headers={"Content-Type": "text/plain"},
                body=True,
            )
        )
    )
    request = RelayedHttpRequest.from_message(message, entity="myhc", body=b"payload")
    assert (request.method, request.path, request.suffix, request.query) == ("POST", "/myhc/abc/def", "/abc/def", "x=1&y")
    assert request.headers["content-type"] == "text/plain"
    assert await request.read() == b"payload"
    assert await request.read() == b""  # a body is read once


async def test_request_body_streams_and_drain_finishes_it():
    request = RelayedHttpRequest(method="PUT", target="/hc", headers={}, entity="hc", body=_agen([b"a", b"b", b"c"]))
    iterator = request.body.__aiter__()
    assert await iterator.__anext__() == b"a"
    await request.body.drain()
    assert await request.read() == b""
    assert request.suffix == ""
