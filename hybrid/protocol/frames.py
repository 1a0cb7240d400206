"""Streaming WebSocket framing (RFC 6455), sans-I/O, for the gateway side of every socket.

The gateway relays frames as they arrive instead of reassembling messages: a data frame is announced by its header
(``HEADER``), its payload follows in chunks as the bytes come in (``DATA``, already unmasked), and ``END`` closes the
frame. Memory per socket is therefore bounded by one read, whatever the frame or message size. Control frames
(≤ 125 bytes) are returned whole (``CONTROL``). Nothing here touches a socket or the clock.

Only clients talk to the gateway, so incoming frames must be masked and outgoing ones are not. No extension is ever
negotiated on gateway sockets (spec §2.6), so RSV bits must be zero.
"""

from __future__ import annotations

import struct

from ..errors import FramingError, PayloadTooLarge

try:  # the C helper shipped with websockets; unmasking is the one per-byte cost of a relay
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback
    _apply_mask = None  # type: ignore[assignment]

__all__ = [
    "CONTROL",
    "DATA",
    "END",
    "HEADER",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "apply_mask",
    "encode_close",
    "encode_frame",
    "frame_header",
    "parse_close",
]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)

# Event kinds: tuples keep the hot path cheap.
HEADER = 1  # (HEADER, fin: bool, opcode: int, length: int)
DATA = 2  # (DATA, payload chunk: bytes)
END = 3  # (END, fin: bool)
CONTROL = 4  # (CONTROL, opcode: int, payload: bytes)

Event = tuple[int, bool, int, int] | tuple[int, bytes] | tuple[int, bool] | tuple[int, int, bytes]


def apply_mask(data: bytes | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``."""
    if _apply_mask is not None:
        return _apply_mask(data, mask)
    n = len(data)
    full = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(full, "big")).to_bytes(n, "big")


class FrameParser:
    """Feed bytes, get frame events. Raises FramingError (close 1002) on a framing violation.

    ``max_frame`` bounds a single *data frame's* declared length (0 = no bound: the payload is streamed anyway).
    Message-level rules checked here: continuation frames only inside a fragmented message, no new data message
    while one is open, control frames unfragmented and ≤ 125 bytes.
    """

    __slots__ = (
        "_buf",
        "_control_buf",
        "_control_op",
        "_fin",
        "_in_message",
        "_mask",
        "_max_frame",
        "_offset",
        "_remaining",
        "_require_mask",
    )

    def __init__(self, *, require_mask: bool = True, max_frame: int = 0) -> None:
        self._buf = b""  # partial header bytes only
        self._remaining = 0  # payload bytes still to come for the current frame
        self._mask = b""
        self._offset = 0  # bytes of the current frame's payload already unmasked (mask phase)
        self._in_message = False  # a fragmented data message is open
        self._fin = True
        self._require_mask = require_mask
        self._max_frame = max_frame
        self._control_op = -1  # >= 0 while collecting a control frame's payload
        self._control_buf = b""

    @property
    def in_frame(self) -> bool:
        """True while the payload of a data frame is still arriving."""
        return self._remaining > 0 and self._control_op < 0

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end or (self._remaining == 0 and self._control_op >= 0):
            if self._remaining > 0:
                take = min(self._remaining, end - pos)
                chunk = view[pos : pos + take]
                pos += take
                self._remaining -= take
                if self._mask:
                    off = self._offset & 3
                    mask = self._mask if off == 0 else self._mask[off:] + self._mask[:off]
                    payload = apply_mask(chunk, mask)
                else:
                    payload = bytes(chunk)
                self._offset += take
                if self._control_op >= 0:
                    self._control_buf += payload
                else:
                    events.append((DATA, payload))
                if self._remaining:
                    break
                self._finish_frame(events)
                continue
            if self._control_op >= 0:  # empty control frame
                self._finish_frame(events)
                continue
            # Parse a header: 2 bytes, then 0/2/8 length bytes, then 0/4 mask bytes.
            need = 2
            head = self._buf + bytes(view[pos : pos + 14]) if self._buf else bytes(view[pos : pos + 14])
            if len(head) < need:
                self._buf = head
                pos = end
                break
            b0, b1 = head[0], head[1]
            length = b1 & 0x7F
            masked = bool(b1 & 0x80)
            if length == 126:
                need += 2
            elif length == 127:
                need += 8
            if masked:
                need += 4
            if len(head) < need:
                self._buf = head
                pos = end
                break
            consumed_from_view = need - len(self._buf)
            self._buf = b""
            pos += consumed_from_view
            if length == 126:
                (length,) = struct.unpack_from("!H", head, 2)
                off = 4
            elif length == 127:
                (length,) = struct.unpack_from("!Q", head, 2)
                if length >> 63:
                    raise FramingError("frame length has its most significant bit set")
                off = 10
            else:
                off = 2
            fin = bool(b0 & 0x80)
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise FramingError("reserved bits set: no extension was negotiated")
            if masked != self._require_mask:
                raise FramingError("client frames must be masked" if self._require_mask else "unexpected mask")
            self._mask = head[off : off + 4] if masked else b""
            self._offset = 0
            self._remaining = length
            if opcode in _CONTROL_OPS:
                if not fin or length > 125:
                    raise FramingError("control frames must be whole and at most 125 bytes")
                self._control_op = opcode
                self._control_buf = b""
                continue
            if opcode not in _DATA_OPS:
                raise FramingError(f"unknown opcode {opcode:#x}")
            if opcode == OP_CONT:
                if not self._in_message:
                    raise FramingError("continuation frame without a message to continue")
            elif self._in_message:
                raise FramingError("new data message before the previous one ended")
            if self._max_frame and length > self._max_frame:
                raise PayloadTooLarge(f"frame of {length} bytes exceeds {self._max_frame}")
            self._in_message = not fin
            self._fin = fin
            events.append((HEADER, fin, opcode, length))
            if length == 0:
                self._finish_frame(events)
        return events

    def _finish_frame(self, events: list[Event]) -> None:
        if self._control_op >= 0:
            events.append((CONTROL, self._control_op, self._control_buf))
            self._control_op = -1
            self._control_buf = b""
        else:
            events.append((END, self._fin))
        self._remaining = 0


def frame_header(fin: bool, opcode: int, length: int) -> bytes:
    """An unmasked (server-to-client) frame header."""
    b0 = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((b0, length))
    if length < 0x10000:
        return struct.pack("!BBH", b0, 126, length)
    return struct.pack("!BBQ", b0, 127, length)


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    return frame_header(fin, opcode, len(payload)) + payload


def encode_masked_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A whole client-to-server frame, masked with the 4 unpredictable bytes ``mask`` (RFC 6455 §5.3)."""
    header = bytearray(frame_header(True, opcode, len(payload)))
    header[1] |= 0x80
    return bytes(header) + mask + apply_mask(payload, mask)


def encode_close(code: int | None, reason: str = "") -> bytes:
    """A close frame; ``None`` sends an empty close payload (no status)."""
    if code is None:
        return encode_frame(OP_CLOSE)
    data = reason.encode("utf-8")[:123]
    # Never cut a UTF-8 sequence in half.
    data = data.decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + data)


#: Codes that must never appear on the wire (RFC 6455 §7.4.1); mapped when forwarding a close.
_RESERVED_CLOSE = {1004, 1005, 1006, 1015}


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """Code and reason of a close frame payload. Raises FramingError for an invalid one."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FramingError("close frame with a one-byte payload")
    (code,) = struct.unpack_from("!H", payload)
    if code < 1000 or code in _RESERVED_CLOSE or 1016 <= code < 3000 or code >= 5000:
        raise FramingError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FramingError("close reason is not UTF-8") from None
    return code, reason
