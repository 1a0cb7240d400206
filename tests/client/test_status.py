"""Reconnect ladder, status names and status → error mapping (spec §2.8)."""

from __future__ import annotations

import itertools

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from hybrid.client.status import (
    DEFAULT_RECONNECT_DELAYS,
    ListenerStatus,
    ReconnectLadder,
    error_for_status,
    should_reconnect,
    translate_connect_error,
)
from hybrid.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequest,
    ConnectionClosed,
    EndpointNotFound,
    ListenerUnavailable,
    RelayError,
    RelayTimeout,
)


def test_ladder_is_the_net_one_then_stays_at_thirty_seconds():
    ladder = ReconnectLadder()
    assert list(itertools.islice(ladder, 8)) == [0, 1, 2, 5, 10, 30, 30, 30]
    assert DEFAULT_RECONNECT_DELAYS == (0, 1, 2, 5, 10, 30)


def test_ladder_starts_over_after_reset():
    ladder = ReconnectLadder()
    ladder.next_delay(), ladder.next_delay(), ladder.next_delay()
    assert ladder.attempt == 3
    ladder.reset()
    assert ladder.next_delay() == 0


def test_ladder_refuses_nonsense():
    with pytest.raises(ValueError):
        ReconnectLadder(())
    with pytest.raises(ValueError):
        ReconnectLadder((1, -1))


def test_status_values_are_the_net_event_names():
    assert [s.value for s in ListenerStatus] == ["Offline", "Connecting", "Online"]


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, BadRequest),
        (401, AuthenticationError),
        (403, AuthorizationError),
        (404, EndpointNotFound),
        (502, ListenerUnavailable),
        (504, RelayTimeout),
    ],
)
def test_status_maps_to_the_project_error(status, cls):
    error = error_for_status(status, "because")
    assert type(error) is cls
    assert error.http_status == status
    assert error.status_description == "because"


def test_unmapped_status_keeps_code_and_description():
    error = error_for_status(418, "Status Description from test")
    assert type(error) is RelayError
    assert error.http_status == 418
    assert "Status Description from test" in str(error)


def test_invalid_status_from_websockets_is_translated():
    exc = InvalidStatus(Response(410, "Gone", Headers(), b""))
    error = translate_connect_error(exc, "connect")
    assert isinstance(error, RelayError) and error.http_status == 410 and error.status_description == "Gone"


def test_network_errors_become_connection_closed_and_timeouts_relay_timeout():
    assert isinstance(translate_connect_error(ConnectionRefusedError(111, "refused"), "listen"), ConnectionClosed)
    assert isinstance(translate_connect_error(TimeoutError(), "listen"), RelayTimeout)
    other = KeyError("x")
    assert translate_connect_error(other, "listen") is other


def test_only_endpoint_not_found_stops_a_listener():
    assert not should_reconnect(EndpointNotFound("gone"))
    assert should_reconnect(AuthenticationError("401"))
    assert should_reconnect(AuthorizationError("403"))
    assert should_reconnect(ConnectionClosed("drop"))
    assert should_reconnect(None)
