"""
HTTP/1.1 over a `StringTransport`: a client connection to a real
`twisted.web.server.Site`, and the parsing of what the server wrote.  The
real ``Request``/``HTTPChannel`` pair runs (framing, backpressure,
disconnects), and what is checked is what a client would receive on the
wire.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site


class PacedTransport(StringTransport):
    """
    A `StringTransport` that, like a real TCP transport, pauses its
    producer from inside ``write`` once ``limit`` bytes are unsent, and
    resumes it when the test calls `drain`.

    :ivar on_write: Called after every write, to provoke re-entrancy.
    """

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.unsent = 0
        self.pauses = 0
        self.on_write: Callable[[bytes], None] | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        self._wrote(len(data))
        if self.on_write is not None:
            self.on_write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        super().writeSequence(data)
        self._wrote(sum(map(len, data)))

    def _wrote(self, length: int) -> None:
        self.unsent += length
        producer = self.channel()
        if (
            self.limit is not None
            and self.unsent >= self.limit
            and self.producerState == "producing"
            and producer is not None
        ):
            self.pauses += 1
            self.producerState = "paused"
            producer.pauseProducing()

    def channel(self) -> IPushProducer | None:
        """
        The producer registered with this transport: the ``HTTPChannel``.
        """
        producer: IPushProducer | None = getattr(self, "producer", None)
        return producer

    def drain(self) -> None:
        """
        The peer read everything: resume the producer, as the reactor does.
        """
        self.unsent = 0
        producer = self.channel()
        if self.producerState == "paused" and producer is not None:
            self.producerState = "producing"
            producer.resumeProducing()


@attrs.frozen
class Response:
    """
    A parsed (possibly partial) HTTP response.
    """

    status: int
    phrase: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes
    #: Whether the body is complete by its own framing.
    complete: bool

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return None if values is None else values[-1]


def parse_response(data: bytes) -> Response | None:
    """
    Parse one response from raw bytes, or ``None`` if the headers are not
    all there yet.
    """
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *lines = head.split(b"\r\n")
    code, _, phrase = status_line.partition(b" ")[2].partition(b" ")
    status = int(code)
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        body, complete = _dechunk(rest)
        return Response(status, phrase, headers, body, complete)
    length = headers.get(b"content-length")
    expected = int(length[-1]) if length else None
    return Response(status, phrase, headers, rest, expected is not None and len(rest) == expected)


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    body: list[bytes] = []
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return b"".join(body), False
        size = int(size_line, 16)
        if size == 0:
            return b"".join(body), data.startswith(b"\r\n")
        body.append(data[:size])
        data = data[size + 2 :]


@attrs.define
class Client:
    """
    One client connection to a `Site`, over a `PacedTransport`.
    """

    site: Site
    transport: PacedTransport
    protocol: object

    def send(self, raw: bytes) -> None:
        self.protocol.dataReceived(raw)  # type: ignore[attr-defined]

    def response(self) -> Response:
        parsed = parse_response(self.transport.value())
        assert parsed is not None, f"no complete headers in {self.transport.value()!r}"
        return parsed

    def body(self) -> bytes:
        return self.response().body

    def disconnect(self) -> None:
        """
        The client goes away, as the reactor reports it.
        """
        self.transport.connected = False
        self.protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]


def connect(site: Site, limit: int | None = None) -> Client:
    """
    Open a client connection to ``site``.
    """
    protocol = site.buildProtocol(None)
    assert protocol is not None
    transport = PacedTransport(limit)
    protocol.makeConnection(transport)
    return Client(site, transport, protocol)


def get(
    site: Site,
    path: bytes = b"/f",
    headers: dict[bytes, bytes] | None = None,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    limit: int | None = None,
) -> Client:
    """
    Open a connection to ``site`` and send one request.
    """
    client = connect(site, limit)
    lines = [b"%s %s %s" % (method, path, version), b"Host: proxy.test"]
    lines += [b"%s: %s" % item for item in (headers or {}).items()]
    client.send(b"\r\n".join(lines) + b"\r\n\r\n")
    return client


@attrs.frozen
class Answer:
    """
    A complete response as a client reads it: the status code, the reason
    phrase, each header's last value by lower-case name, and the body its
    framing delimits.
    """

    code: int
    phrase: str
    headers: dict[str, str]
    body: bytes


def parse_answer(raw: bytes) -> Answer | None:
    """
    The first final response in ``raw`` (after any ``100 Continue``), or
    ``None`` if its headers are not all there yet.
    """
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    response = parse_response(raw)
    if response is None:
        return None
    headers = {k.decode("latin-1"): v[-1].decode("latin-1") for k, v in response.headers.items()}
    body = response.body
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(response.status, response.phrase.decode("latin-1"), headers, body)


def make_site(resource: Resource, clock: Clock) -> Site:
    """
    A `Site` for ``resource`` whose timers run on ``clock``; its idle
    timeout is off, so the only delayed calls are the code under test's.
    """
    return Site(resource, reactor=clock, timeout=None)
