"""Streaming RFC 6455 frame parser: split-point properties, fragmentation and control rules, close payloads.

Client frames are built by hand here (header bits, length forms, XOR masking) so the parser is checked against
RFC 6455 directly rather than against the module's own encoder.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from hybrid.errors import PayloadTooLarge, ProtocolError
from hybrid.protocol import frames as fr
from hybrid.protocol.frames import (
    CONTROL,
    DATA,
    END,
    HEADER,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    apply_mask,
    encode_close,
    encode_frame,
    frame_header,
    parse_close,
)

MASK = b"\x37\xfa\x21\x3d"


def xor(payload: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = MASK, rsv: int = 0,
                 length_form: int | None = None, declared: int | None = None) -> bytes:
    """A frame as a client sends it. ``length_form`` forces 7, 16 or 64-bit lengths; ``declared`` lies about it."""
    n = len(payload) if declared is None else declared
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask is not None else 0
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    if form == 7:
        head = bytes((b0, mbit | n))
    elif form == 16:
        head = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + xor(payload, mask)


def feed_all(parser: FrameParser, chunks) -> list:
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def squash(events: list) -> list:
    """Merge consecutive DATA events so event lists compare independently of chunking."""
    out: list = []
    for ev in events:
        if ev[0] == DATA and out and out[-1][0] == DATA:
            out[-1] = (DATA, out[-1][1] + ev[1])
        else:
            out.append((ev[0], *[bytes(x) if isinstance(x, (bytes, memoryview)) else x for x in ev[1:]]))
    return [e for e in out if not (e[0] == DATA and e[1] == b"")]


@pytest.fixture(params=["speedups", "pure-python"])
def masker(request, monkeypatch):
    """Run a test with the C unmasking helper and with the pure-Python fallback."""
    if request.param == "pure-python":
        monkeypatch.setattr(fr, "_apply_mask", None)
    elif fr._apply_mask is None:  # pragma: no cover - websockets without its C extension
        pytest.skip("websockets.speedups is not available")
    return request.param


# ---- apply_mask ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 17, 1000])
def test_apply_mask_matches_xor(masker, n):
    data = os.urandom(n)
    assert bytes(apply_mask(data, MASK)) == xor(data, MASK)
    assert bytes(apply_mask(memoryview(b"??" + data)[2:], MASK)) == xor(data, MASK)
    assert bytes(apply_mask(apply_mask(data, MASK), MASK)) == data


# ---- split points -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, header_len", [(0, 6), (1, 6), (125, 6), (126, 8), (65535, 8), (65536, 14)])
def test_masked_frame_split_at_every_byte_boundary(n, header_len):
    payload = os.urandom(n)
    frame = client_frame(OP_BINARY, payload)
    assert len(frame) == header_len + n
    # The declared length form: 7-bit, then 16-bit from 126, 64-bit from 65536.
    assert frame[1] & 0x7F == (n if n < 126 else 126 if n < 65536 else 127)
    expected = [(HEADER, True, OP_BINARY, n)] + ([(DATA, payload)] if n else []) + [(END, True)]
    for k in range(len(frame) + 1):
        parser = FrameParser()
        events = parser.feed(frame[:k]) + parser.feed(frame[k:])
        assert squash(events) == expected, k
        assert not parser.in_frame


@pytest.mark.parametrize("n", [0, 1, 5, 125, 126, 65535, 65536])
def test_split_points_with_pure_python_unmasking(monkeypatch, n):
    monkeypatch.setattr(fr, "_apply_mask", None)
    payload = os.urandom(n)
    frame = client_frame(OP_BINARY, payload)
    expected = [(HEADER, True, OP_BINARY, n)] + ([(DATA, payload)] if n else []) + [(END, True)]
    # Every point in the header and the first and last bytes of the payload, then a stride that visits all four
    # mask phases.
    points = set(range(min(len(frame) + 1, 40))) | set(range(max(0, len(frame) - 20), len(frame) + 1))
    points |= set(range(0, len(frame) + 1, 997))
    for k in sorted(points):
        parser = FrameParser()
        assert squash(parser.feed(frame[:k]) + parser.feed(frame[k:])) == expected, k


@pytest.mark.parametrize("n", [0, 1, 7, 126])
def test_every_pair_of_split_points(masker, n):
    payload = bytes(range(256))[:n] if n <= 256 else os.urandom(n)
    frame = client_frame(OP_TEXT, payload, fin=False) + client_frame(OP_CONT, payload[::-1])
    expected = [(HEADER, False, OP_TEXT, n)] + ([(DATA, payload)] if n else []) + [(END, False)] \
        + [(HEADER, True, OP_CONT, n)] + ([(DATA, payload[::-1])] if n else []) + [(END, True)]
    for i in range(len(frame) + 1):
        for j in range(i, len(frame) + 1):
            parser = FrameParser()
            assert squash(feed_all(parser, (frame[:i], frame[i:j], frame[j:]))) == expected, (i, j)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 125, 126, 1000, 65536])
def test_byte_by_byte(masker, n):
    if masker == "pure-python" and n > 2000:
        pytest.skip("slow without the C helper")
    payload = os.urandom(n)
    frame = client_frame(OP_BINARY, payload)
    parser = FrameParser()
    events = feed_all(parser, (frame[i:i + 1] for i in range(len(frame))))
    assert squash(events) == [(HEADER, True, OP_BINARY, n), (DATA, payload), (END, True)]
    # Every DATA chunk is at most one fed byte: nothing is buffered whole.
    assert all(len(e[1]) <= 1 for e in events if e[0] == DATA)


def test_random_chunkings_of_a_stream(masker):
    rng = random.Random(6455)
    frames, expected = [], []
    for _ in range(40):
        n = rng.choice([0, 1, 2, 3, 4, 5, 100, 125, 126, 127, 300, 70000])
        payload = rng.randbytes(n)
        mask = rng.randbytes(4)
        if rng.random() < 0.3:
            ping = rng.randbytes(rng.randrange(0, 126))
            frames.append(client_frame(OP_PING, ping, mask=mask))
            expected.append((CONTROL, OP_PING, ping))
        frames.append(client_frame(OP_BINARY, payload, mask=mask))
        expected += [(HEADER, True, OP_BINARY, n)] + ([(DATA, payload)] if n else []) + [(END, True)]
    stream = b"".join(frames)
    for _ in range(10):
        parser = FrameParser()
        pos, chunks = 0, []
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 5, 13, 126, 4096, 100_000])
            chunks.append(stream[pos:pos + step])
            pos += step
        assert squash(feed_all(parser, chunks)) == expected


def test_many_frames_in_one_chunk():
    stream = client_frame(OP_TEXT, b"a") + client_frame(OP_BINARY, b"") + client_frame(OP_PING, b"") \
        + client_frame(OP_BINARY, b"xyz")
    assert FrameParser().feed(stream) == [
        (HEADER, True, OP_TEXT, 1), (DATA, b"a"), (END, True),
        (HEADER, True, OP_BINARY, 0), (END, True),
        (CONTROL, OP_PING, b""),
        (HEADER, True, OP_BINARY, 3), (DATA, b"xyz"), (END, True),
    ]


def test_data_is_streamed_as_it_arrives_and_in_frame_tracks_it():
    payload = os.urandom(1000)
    frame = client_frame(OP_BINARY, payload)
    parser = FrameParser()
    first = parser.feed(frame[:8 + 10])  # 16-bit length form: 8 header bytes
    assert first == [(HEADER, True, OP_BINARY, 1000), (DATA, payload[:10])]
    assert parser.in_frame
    second = parser.feed(frame[18:])
    assert second == [(DATA, payload[10:]), (END, True)]
    assert not parser.in_frame


def test_control_frame_split_at_every_byte_boundary(masker):
    body = os.urandom(125)
    frame = client_frame(OP_PING, body)
    for k in range(len(frame) + 1):
        parser = FrameParser()
        events = parser.feed(frame[:k]) + parser.feed(frame[k:])
        assert events == [(CONTROL, OP_PING, body)], k
        assert not parser.in_frame


def test_empty_control_frames():
    parser = FrameParser()
    assert parser.feed(client_frame(OP_PING)) == [(CONTROL, OP_PING, b"")]
    assert parser.feed(client_frame(OP_PONG)) == [(CONTROL, OP_PONG, b"")]
    assert parser.feed(client_frame(OP_CLOSE)) == [(CONTROL, OP_CLOSE, b"")]
    assert parser.feed(b"") == []


# ---- fragmentation ----------------------------------------------------------------------------------------------------

def test_fragmented_message_with_interleaved_control_frames(masker):
    stream = (client_frame(OP_TEXT, b"Hel", fin=False) + client_frame(OP_PING, b"p1")
              + client_frame(OP_CONT, b"lo ", fin=False) + client_frame(OP_PONG, b"")
              + client_frame(OP_CONT, b"", fin=False) + client_frame(OP_CONT, b"world", fin=True)
              + client_frame(OP_BINARY, b"next"))
    expected = [
        (HEADER, False, OP_TEXT, 3), (DATA, b"Hel"), (END, False),
        (CONTROL, OP_PING, b"p1"),
        (HEADER, False, OP_CONT, 3), (DATA, b"lo "), (END, False),
        (CONTROL, OP_PONG, b""),
        (HEADER, False, OP_CONT, 0), (END, False),
        (HEADER, True, OP_CONT, 5), (DATA, b"world"), (END, True),
        (HEADER, True, OP_BINARY, 4), (DATA, b"next"), (END, True),
    ]
    assert FrameParser().feed(stream) == expected
    for k in range(len(stream) + 1):
        parser = FrameParser()
        assert squash(parser.feed(stream[:k]) + parser.feed(stream[k:])) == expected, k


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_a_message_is_an_error(fin):
    with pytest.raises(ProtocolError, match="continuation"):
        FrameParser().feed(client_frame(OP_CONT, b"x", fin=fin))
    # Also after a complete message.
    parser = FrameParser()
    parser.feed(client_frame(OP_TEXT, b"done"))
    with pytest.raises(ProtocolError, match="continuation"):
        parser.feed(client_frame(OP_CONT, b"x", fin=fin))


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_new_data_message_inside_an_open_one_is_an_error(opcode):
    parser = FrameParser()
    parser.feed(client_frame(OP_BINARY, b"part", fin=False))
    parser.feed(client_frame(OP_PING, b""))  # control frames do not end the message
    with pytest.raises(ProtocolError, match="before the previous one ended"):
        parser.feed(client_frame(opcode, b"x"))


def test_message_can_start_again_after_final_fragment():
    parser = FrameParser()
    parser.feed(client_frame(OP_BINARY, b"a", fin=False) + client_frame(OP_CONT, b"b"))
    assert parser.feed(client_frame(OP_TEXT, b"c")) == [(HEADER, True, OP_TEXT, 1), (DATA, b"c"), (END, True)]


# ---- frame-level rules ------------------------------------------------------------------------------------------------

def test_unmasked_client_frame_is_an_error():
    with pytest.raises(ProtocolError, match="masked") as info:
        FrameParser().feed(client_frame(OP_TEXT, b"hi", mask=None))
    assert info.value.http_status == 400
    with pytest.raises(ProtocolError):
        FrameParser().feed(client_frame(OP_PING, b"", mask=None))


def test_masked_frame_when_none_expected_is_an_error():
    with pytest.raises(ProtocolError, match="mask"):
        FrameParser(require_mask=False).feed(client_frame(OP_TEXT, b"hi"))


@pytest.mark.parametrize("rsv", [1, 2, 4, 3, 7])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_PING])
def test_rsv_bits_are_an_error(rsv, opcode):
    with pytest.raises(ProtocolError, match="reserved bits"):
        FrameParser().feed(client_frame(opcode, b"x", rsv=rsv))


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_rules(opcode):
    body = os.urandom(125)
    assert FrameParser().feed(client_frame(opcode, body)) == [(CONTROL, opcode, body)]
    with pytest.raises(ProtocolError, match="125"):
        FrameParser().feed(client_frame(opcode, body + b"x"))  # 126 bytes, 16-bit form
    with pytest.raises(ProtocolError, match="125"):
        FrameParser().feed(client_frame(opcode, os.urandom(70000)))  # 64-bit form
    with pytest.raises(ProtocolError, match="whole"):
        FrameParser().feed(client_frame(opcode, b"x", fin=False))
    # Refused as soon as the header is known, before any payload.
    head = client_frame(opcode, os.urandom(200))[:8]
    with pytest.raises(ProtocolError):
        FrameParser().feed(head)


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_are_an_error(opcode):
    with pytest.raises(ProtocolError, match="opcode"):
        FrameParser().feed(client_frame(opcode, b"x"))


def test_64_bit_length_with_msb_set_is_an_error():
    head = bytes((0x82, 0x80 | 127)) + (1 << 63 | 5).to_bytes(8, "big") + MASK
    with pytest.raises(ProtocolError, match="most significant bit"):
        FrameParser().feed(head)
    # Arriving in pieces changes nothing.
    parser = FrameParser()
    assert parser.feed(head[:5]) == []
    with pytest.raises(ProtocolError):
        parser.feed(head[5:])


def test_non_minimal_length_forms_are_understood():
    # A 16-bit or 64-bit form for a small payload still carries the right length.
    for form in (16, 64):
        frame = client_frame(OP_BINARY, b"abc", length_form=form)
        assert FrameParser().feed(frame) == [(HEADER, True, OP_BINARY, 3), (DATA, b"abc"), (END, True)]


def test_max_frame_bounds_data_frames_only():
    parser = FrameParser(max_frame=10)
    assert squash(parser.feed(client_frame(OP_BINARY, b"x" * 10)))[0] == (HEADER, True, OP_BINARY, 10)
    with pytest.raises(PayloadTooLarge):
        FrameParser(max_frame=10).feed(client_frame(OP_BINARY, b"x" * 11))
    with pytest.raises(PayloadTooLarge):  # checked from the declared length, before the payload arrives
        FrameParser(max_frame=10).feed(client_frame(OP_BINARY, b"", declared=1 << 40)[:14])
    assert FrameParser(max_frame=10).feed(client_frame(OP_PING, b"y" * 100)) == [(CONTROL, OP_PING, b"y" * 100)]
    # 0 means no bound.
    events = FrameParser(max_frame=0).feed(client_frame(OP_BINARY, b"z" * 100_000))
    assert events[0] == (HEADER, True, OP_BINARY, 100_000)


def test_huge_declared_length_is_streamed_not_buffered():
    parser = FrameParser()
    head = client_frame(OP_BINARY, b"", declared=1 << 40)
    assert parser.feed(head) == [(HEADER, True, OP_BINARY, 1 << 40)]
    chunk = os.urandom(4096)
    assert parser.feed(xor(chunk, MASK)) == [(DATA, chunk)]
    assert parser.in_frame


# ---- encoding (server side) ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, head", [
    (0, b"\x82\x00"),
    (1, b"\x82\x01"),
    (125, b"\x82\x7d"),
    (126, b"\x82\x7e\x00\x7e"),
    (65535, b"\x82\x7e\xff\xff"),
    (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_frame_header_length_forms(n, head):
    assert frame_header(True, OP_BINARY, n) == head
    assert frame_header(False, OP_CONT, n)[0] == 0x00
    assert frame_header(False, OP_TEXT, n)[1:] == head[1:]


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536])
@pytest.mark.parametrize("fin, opcode", [(True, OP_BINARY), (False, OP_TEXT), (True, OP_PONG)])
def test_encode_frame_round_trips_through_an_unmasked_parser(n, fin, opcode):
    if opcode == OP_PONG and n > 125:
        return
    payload = os.urandom(n)
    data = encode_frame(opcode, payload, fin=fin)
    assert data == frame_header(fin, opcode, n) + payload
    assert not data[1] & 0x80  # server frames are never masked
    for k in sorted({0, 1, 2, 3, len(data) // 2, len(data) - 1, len(data)}):
        parser = FrameParser(require_mask=False)
        events = squash(parser.feed(data[:k]) + parser.feed(data[k:]))
        if opcode == OP_PONG:
            assert events == [(CONTROL, OP_PONG, payload)]
        else:
            assert events == [(HEADER, fin, opcode, n)] + ([(DATA, payload)] if n else []) + [(END, fin)]


def test_encode_close_round_trip():
    for code, reason in ((1000, ""), (1001, "going away"), (4000, "ünïcødé"), (3000, "x")):
        data = encode_close(code, reason)
        events = FrameParser(require_mask=False).feed(data)
        assert len(events) == 1 and events[0][:2] == (CONTROL, OP_CLOSE)
        assert events[0][2][:2] == struct.pack("!H", code)
        assert parse_close(events[0][2]) == (code, reason)


def test_encode_close_without_code_is_empty():
    data = encode_close(None, "ignored")
    assert data == b"\x88\x00"
    assert parse_close(FrameParser(require_mask=False).feed(data)[0][2]) == (None, "")


def test_encode_close_truncates_reason_without_splitting_utf8():
    data = encode_close(1000, "€" * 100)  # 300 bytes of reason
    payload = FrameParser(require_mask=False).feed(data)[0][2]
    assert len(payload) <= 125
    code, reason = parse_close(payload)
    assert code == 1000 and reason == "€" * 41  # 123 bytes allow 41 whole characters
    ascii_payload = FrameParser(require_mask=False).feed(encode_close(1000, "a" * 500))[0][2]
    assert len(ascii_payload) == 125


# ---- close payloads -----------------------------------------------------------------------------------------------------

def test_parse_close_empty():
    assert parse_close(b"") == (None, "")


def test_parse_close_one_byte_is_invalid():
    with pytest.raises(ProtocolError, match="one-byte"):
        parse_close(b"\x03")


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
                                  3999, 4000, 4999])
def test_valid_close_codes(code):
    assert parse_close(struct.pack("!H", code) + b"why") == (code, "why")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code):
    with pytest.raises(ProtocolError, match="invalid close code"):
        parse_close(struct.pack("!H", code))


@pytest.mark.parametrize("reason", [b"\xff", b"\xc3", b"ok\xed\xa0\x80", b"\xc0\xaf"])
def test_close_reason_must_be_utf8(reason):
    with pytest.raises(ProtocolError, match="UTF-8"):
        parse_close(struct.pack("!H", 1000) + reason)


def test_close_reason_utf8_decoded():
    assert parse_close(struct.pack("!H", 1001) + "adiós".encode()) == (1001, "adiós")


def test_event_and_opcode_constants():
    assert (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG) == (0, 1, 2, 8, 9, 10)
    assert len({HEADER, DATA, END, CONTROL}) == 4


def test_framing_errors_close_with_1002():
    from hybrid.errors import FramingError
    from hybrid.protocol.frames import FrameParser

    with pytest.raises(FramingError) as info:
        FrameParser().feed(b"\x81\x05hello")  # unmasked client frame
    assert info.value.close_code == 1002
