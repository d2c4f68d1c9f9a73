"""Who may talk on the peer port: strangers and forged senders are refused; over TLS only a
certificate of the peer CA (with an allowed name) gets in, and certificates are re-read."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from raftkv.peer import framing
from raftkv.peer.framing import ErrorCode, FrameKind, Hello, StreamKind
from raftkv.peer.security import PeerSecurity, unauthenticated_warning
from raftkv.raft.codec import encode_message
from raftkv.tlsutil import ReloadingContext, TLSInfo, TLSPolicy
from tests.peer.harness import CLUSTER, Node, app, mesh, raw_connect, wait_until
from tests.tls_certs import PeerCerts, make_peer_certs


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def security(
    certs: PeerCerts, name: str, *, allowed_cns: tuple[str, ...] = (), ca: Path | None = None
) -> PeerSecurity:
    info = TLSInfo(
        cert_file=str(certs.cert(name)),
        key_file=str(certs.key(name)),
        trusted_ca_file=str(ca or certs.ca),
        client_cert_auth=True,
        allowed_cns=allowed_cns,
    )
    policy = TLSPolicy()
    return PeerSecurity(
        server=ReloadingContext(lambda: info.server_context(policy), info.files()),
        client=ReloadingContext(lambda: info.client_context(policy), info.files()),
        allowed_cns=allowed_cns,
        client_cert_auth=True,
    )


def test_a_stranger_is_refused_at_the_handshake(tmp_path: Path) -> None:
    async def main() -> None:
        b = Node(2, str(tmp_path))
        await b.t.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            hello = Hello(framing.PROTOCOL_VERSION, StreamKind.MESSAGES, CLUSTER, 9, 2)
            writer.write(framing.encode_hello(hello))
            kind, payload = await asyncio.wait_for(framing.read_frame(reader), 5)
            writer.close()
            assert kind is FrameKind.ERROR
            code, text = framing.decode_error(payload)
            assert code is ErrorCode.WRONG_MEMBER
            assert "9 is not a member" in text
            assert b.t.stats.refused_handshakes == 1
            assert "claiming to be member 9" in b.log.text()
        finally:
            await b.t.stop()

    run(main())


def test_a_member_not_yet_known_is_reported_then_heard_once_added(tmp_path: Path) -> None:
    """A member of this cluster that this one does not know yet (it joined after what this one
    applied) is refused but reported (``on_unknown_peer``); a stranger from another cluster is
    not.  Once the member is added, its retried stream is accepted."""

    async def main() -> None:
        a = Node(1, str(tmp_path / "a"))
        b = Node(2, str(tmp_path / "b"))
        other = Node(3, str(tmp_path / "c"), cluster_id=CLUSTER + 1)
        told: list[int] = []
        b.t.on_unknown_peer = told.append
        for n in (a, b, other):
            await n.t.start()
        try:
            a.t.add_peer(2, b.t.urls)
            other.t.add_peer(2, b.t.urls)
            a.t.send([app(1, 2, 5)])
            other.t.send([app(3, 2, 5)])
            await wait_until(lambda: 1 in told, what="member 1 reported")
            assert b.received == []
            b.t.add_peer(1, a.t.urls)  # as Membership does once a known member lists it
            await wait_until(lambda: a.t.is_connected(2), what="member 1's stream accepted")
            a.t.send([app(1, 2, 6)])
            await wait_until(lambda: 6 in [m.index for m in b.received], what="delivery")
            assert set(told) == {1}  # never the member of another cluster
        finally:
            for n in (a, b, other):
                await n.t.stop()

    run(main())


def test_a_message_claiming_another_sender_is_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        b = Node(2, str(tmp_path))
        await b.t.start()
        try:
            b.know(7)
            b.know(1)
            _, writer = await raw_connect(b.port, StreamKind.MESSAGES, frm=7, to=2)
            forged, honest = app(1, 2, 10), app(7, 2, 11)
            payload = framing.encode_batch_payload([encode_message(forged), encode_message(honest)])
            writer.write(framing.encode_frame(FrameKind.MESSAGES, payload))
            await wait_until(lambda: len(b.received) == 1)
            writer.close()
            assert [(m.frm, m.index) for m in b.received] == [(7, 11)]
            assert b.t.stats.forged_messages == 1
            assert "claiming to come from member 1 on the stream of member 7" in b.log.text()
        finally:
            await b.t.stop()

    run(main())


def test_members_with_peer_ca_certificates_talk_over_tls(tmp_path: Path) -> None:
    certs = make_peer_certs(tmp_path / "certs", ("m1", "m2"))

    async def main() -> None:
        a = Node(1, str(tmp_path), scheme="https", security=security(certs, "m1"))
        b = Node(2, str(tmp_path), scheme="https", security=security(certs, "m2"))
        await a.t.start()
        await b.t.start()
        try:
            assert a.t.urls[0].startswith("https://")
            await mesh([a, b])
            a.t.send([app(1, 2, i) for i in range(20)])
            b.t.send([app(2, 1, 5)])
            await wait_until(lambda: len(b.received) == 20 and len(a.received) == 1)
            assert [m.index for m in b.received] == list(range(20))
        finally:
            await a.t.stop()
            await b.t.stop()

    run(main())


async def _tls_dial(port: int, ctx: ssl.SSLContext) -> bytes:
    """Dial with ``ctx``, play member 1 and return the first byte the listener answers; b""
    when it hung up or refused the TLS handshake (with TLS 1.3 the refusal of a client
    certificate may only show at the first read)."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
        )
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        hello = Hello(framing.PROTOCOL_VERSION, StreamKind.MESSAGES, CLUSTER, 1, 2)
        writer.write(framing.encode_hello(hello))
        await writer.drain()
        return await asyncio.wait_for(reader.read(1), 5)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize("who", ["no certificate", "another CA", "plaintext"])
def test_a_dialer_without_a_peer_ca_certificate_gets_nothing(tmp_path: Path, who: str) -> None:
    certs = make_peer_certs(tmp_path / "certs", ("m1", "m2"))
    intruder = make_peer_certs(tmp_path / "intruder", ("m1",))

    async def main() -> None:
        b = Node(2, str(tmp_path), scheme="https", security=security(certs, "m2"))
        b.know(1)
        await b.t.start()
        try:
            if who == "plaintext":
                reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
                hello = Hello(framing.PROTOCOL_VERSION, StreamKind.MESSAGES, CLUSTER, 1, 2)
                writer.write(framing.encode_hello(hello))
                assert await asyncio.wait_for(reader.read(), 10) == b""
                writer.close()
            else:
                ctx = ssl.create_default_context(cafile=str(certs.ca))
                if who == "another CA":
                    ctx.load_cert_chain(intruder.cert("m1"), intruder.key("m1"))
                assert await _tls_dial(b.port, ctx) == b""
            assert b.received == []
            assert b.t.stats.frames_received == 0
            await wait_until(lambda: b.t.stats.refused_handshakes == 1)
            assert "rejected peer connection from ('127.0.0.1'," in b.log.text()
            assert "TLS handshake failed" in b.log.text()
        finally:
            await b.t.stop()

    run(main())


def test_a_certificate_name_outside_the_allowed_cns_is_refused(tmp_path: Path) -> None:
    certs = make_peer_certs(tmp_path / "certs", ("m1", "m2", "m3"))

    async def main() -> None:
        b = Node(
            2, str(tmp_path), scheme="https", security=security(certs, "m2", allowed_cns=("m1",))
        )
        b.know(1)
        await b.t.start()
        try:
            ctx = ssl.create_default_context(cafile=str(certs.ca))
            ctx.load_cert_chain(certs.cert("m3"), certs.key("m3"))
            assert await _tls_dial(b.port, ctx) == b""
            assert "certificate CN='m3'" in b.log.text()
            assert b.t.stats.refused_handshakes == 1
            ok = ssl.create_default_context(cafile=str(certs.ca))
            ok.load_cert_chain(certs.cert("m1"), certs.key("m1"))
            assert await _tls_dial(b.port, ok) != b""  # the handshake reply begins
        finally:
            await b.t.stop()

    run(main())


def test_a_replaced_certificate_serves_new_connections(tmp_path: Path) -> None:
    certs = make_peer_certs(tmp_path / "certs", ("m1", "m2", "renewed"))

    async def main() -> None:
        sec = security(certs, "m2")
        b = Node(2, str(tmp_path), scheme="https", security=sec)
        await b.t.start()
        try:
            ctx = ssl.create_default_context(cafile=str(certs.ca))
            ctx.load_cert_chain(certs.cert("m1"), certs.key("m1"))

            async def served_cn() -> str:
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", b.port, ssl=ctx, server_hostname="127.0.0.1"
                )
                cert = writer.get_extra_info("peercert")
                writer.close()
                return dict(x[0] for x in cert["subject"])["commonName"]

            assert await served_cn() == "m2"
            certs.cert("m2").write_bytes(certs.cert("renewed").read_bytes())
            certs.key("m2").write_bytes(certs.key("renewed").read_bytes())
            assert await served_cn() == "renewed"
            assert sec.server is not None and sec.server.reloads == 1
        finally:
            await b.t.stop()

    run(main())


def test_an_exposed_plaintext_peer_port_is_warned_about() -> None:
    plain = PeerSecurity()
    assert unauthenticated_warning(["http://127.0.0.1:2380", "http://[::1]:2380"], plain) is None
    warning = unauthenticated_warning(["http://10.0.0.5:2380"], plain)
    assert warning is not None and "http://10.0.0.5:2380 is unauthenticated" in warning
    tls_only = PeerSecurity(client_cert_auth=False)
    assert unauthenticated_warning(["https://10.0.0.5:2380"], tls_only) is not None
    assert (
        unauthenticated_warning(["https://10.0.0.5:2380"], PeerSecurity(client_cert_auth=True))
        is None
    )


def test_tls_min_version_is_honoured_on_the_peer_port(tmp_path: Path) -> None:
    certs = make_peer_certs(tmp_path / "certs", ("m1", "m2"))
    info = TLSInfo(cert_file=str(certs.cert("m2")), key_file=str(certs.key("m2")))
    policy = TLSPolicy(min_version="TLS1.3")
    sec = PeerSecurity(server=ReloadingContext(lambda: info.server_context(policy), info.files()))

    async def main() -> None:
        b = Node(2, str(tmp_path), scheme="https", security=sec)
        b.know(1)
        await b.t.start()
        try:
            old = ssl.create_default_context(cafile=str(certs.ca))
            old.maximum_version = ssl.TLSVersion.TLSv1_2
            assert await _tls_dial(b.port, old) == b""
            assert await _tls_dial(b.port, ssl.create_default_context(cafile=str(certs.ca))) != b""
        finally:
            await b.t.stop()

    run(main())
