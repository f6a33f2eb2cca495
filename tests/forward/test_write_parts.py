"""The forward output writes a frame as its parts (``outputs.forward_client._write``):
``os.writev`` on a plain socket whose transport holds nothing unsent, the
rest through the transport. Whatever the socket takes at once, the peer
must read the frame whole, in order, after any bytes written before it."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from probetag.forward import ClientConnection, ServerConnection
from probetag.outputs import forward_client
from probetag.outputs.forward_client import _Conn, _write


async def _pair(sndbuf: int | None = None) -> tuple[_Conn, socket.socket]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer, _ = lsock.accept()
    lsock.close()
    sock = writer.get_extra_info("socket")
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return _Conn(reader, writer, ClientConnection(), sock.fileno()), peer


async def _drain_into(peer: socket.socket, want: int) -> bytes:
    loop = asyncio.get_running_loop()
    peer.setblocking(False)
    got = bytearray()
    while len(got) < want:
        got += await asyncio.wait_for(loop.sock_recv(peer, 1 << 20), 10)
    return bytes(got)


@pytest.mark.parametrize("size", [10, 100_000, 4_000_000])
def test_a_frame_in_parts_arrives_whole_whatever_the_socket_takes(size: int) -> None:
    async def main() -> None:
        conn, peer = await _pair(sndbuf=8192)
        try:
            body = os.urandom(size)
            view = memoryview(body)
            # a chunk as the stage hands it over: slices of its input and
            # re-encoded records between them
            entries = [view[: size // 3], b"re-encoded record", view[size // 3: size // 2], view[size // 2:]]
            parts = conn.proto.send_packed_parts("t.out", entries, 3, "Y2h1bmstaWQ=")
            want = b"".join(bytes(p) for p in parts)
            assert want == ClientConnection().send_packed("t.out", entries, 3, "Y2h1bmstaWQ=")
            _write(conn, parts)
            if size > 1_000_000:  # more than the socket takes at once: the transport holds the rest
                assert conn.writer.transport.get_write_buffer_size() > 0
            got, _ = await asyncio.gather(_drain_into(peer, len(want)), conn.writer.drain())
            assert got == want
            # and the frame is one the forward server reads as sent
            srv = ServerConnection("127.0.0.1")
            srv.receive_data(got)
            ev = srv.next_event()
            assert getattr(ev, "entries", None) == b"".join(bytes(e) for e in entries), ev
        finally:
            conn.writer.close()
            peer.close()

    asyncio.run(main())


def test_a_frame_after_unsent_bytes_goes_behind_them() -> None:
    async def main() -> None:
        conn, peer = await _pair(sndbuf=8192)
        calls: list[int] = []
        real = os.writev

        def spy(fd: int, parts: list) -> int:  # type: ignore[type-arg]
            calls.append(len(parts))
            return real(fd, parts)

        forward_client.os.writev = spy  # type: ignore[attr-defined]
        try:
            first = os.urandom(2_000_000)
            conn.writer.write(first)  # the socket takes part; the transport holds the rest
            assert conn.writer.transport.get_write_buffer_size() > 0
            parts = conn.proto.send_packed_parts("t", [b"a" * 50_000, b"b" * 50_000], 2, None)
            _write(conn, parts)
            assert calls == []  # behind the transport's bytes, through the transport
            want = first + b"".join(parts)
            got, _ = await asyncio.gather(_drain_into(peer, len(want)), conn.writer.drain())
            assert got == want
            _write(conn, conn.proto.send_packed_parts("t", [b"c", b"d"], 2, None))
            assert calls == [4]  # an empty transport: the parts go to writev
        finally:
            forward_client.os.writev = real  # type: ignore[attr-defined]
            conn.writer.close()
            peer.close()

    asyncio.run(main())


def test_a_closed_peer_is_reported_by_the_transport() -> None:
    async def main() -> None:
        conn, peer = await _pair()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # RST
        await asyncio.sleep(0.05)
        with pytest.raises((ConnectionError, OSError)):
            for _ in range(50):
                _write(conn, conn.proto.send_packed_parts("t", [b"x" * 100_000, b"y"], 2, None))
                await conn.writer.drain()
                await asyncio.sleep(0.01)
        conn.writer.close()

    asyncio.run(main())
