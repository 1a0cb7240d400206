"""Token providers (spec §3) and the renewal schedule (spec §2.5)."""

from __future__ import annotations

import time

import pytest

from hybrid.auth import ConnectionString, audience_covers, build_token, parse_token, verify_signature
from hybrid.client.tokens import (
    SharedAccessKeyTokenProvider,
    SharedAccessSignatureTokenProvider,
    TokenProvider,
    renewal_delay,
    token_provider_from_connection_string,
)
from hybrid.errors import AuthenticationError, ConfigError


async def test_shared_access_key_provider_signs_a_verifiable_token():
    provider = SharedAccessKeyTokenProvider("root", "s3cret")
    before = time.time()
    token, expiry = await provider.get_token("http://gw:8443/myhc", 600)
    parsed = parse_token(token)
    assert verify_signature(parsed, ("s3cret",))
    assert not verify_signature(parsed, ("other",))
    assert parsed.key_name == "root"
    assert parsed.expiry == int(expiry)
    assert before + 599 <= expiry <= time.time() + 601
    assert audience_covers(parsed.resource, "myhc")
    assert "s3cret" not in repr(provider)


async def test_shared_access_signature_provider_returns_the_token_and_its_expiry():
    text = build_token("http://gw/myhc", "root", "k", 2_000_000_000)
    provider = SharedAccessSignatureTokenProvider(text)
    assert await provider.get_token("http://gw/other", 10) == (text, 2_000_000_000.0)


def test_malformed_token_is_refused_up_front():
    with pytest.raises(AuthenticationError):
        SharedAccessSignatureTokenProvider("Bearer nope")


def test_provider_needs_name_and_key():
    with pytest.raises(ConfigError):
        SharedAccessKeyTokenProvider("", "k")


def test_token_provider_is_abstract():
    with pytest.raises(TypeError):
        TokenProvider()  # type: ignore[abstract]


def test_connection_string_picks_the_provider():
    keyed = ConnectionString.parse("Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b")
    assert isinstance(token_provider_from_connection_string(keyed), SharedAccessKeyTokenProvider)
    sas = build_token("http://h/x", "a", "b", 2_000_000_000)
    signed = ConnectionString.parse(f"Endpoint=sb://h/;SharedAccessSignature={sas}")
    assert isinstance(token_provider_from_connection_string(signed), SharedAccessSignatureTokenProvider)
    assert token_provider_from_connection_string(ConnectionString.parse("Endpoint=sb://h/")) is None


def test_renewal_is_due_at_eighty_percent_of_the_lifetime():
    assert renewal_delay(1000.0, 4600.0, 1000.0) == pytest.approx(2880.0)
    assert renewal_delay(1000.0, 4600.0, 2000.0) == pytest.approx(1880.0)


def test_renewal_never_spins_on_short_or_expired_tokens():
    assert renewal_delay(1000.0, 1000.5, 1000.0) == 1.0
    assert renewal_delay(1000.0, 900.0, 5000.0) == 1.0
    assert renewal_delay(0.0, 100.0, 0.0, fraction=0.5, minimum=0.0) == 50.0
