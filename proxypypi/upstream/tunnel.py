# -*- test-case-name: tests.test_tunnel -*-
"""
https upstreams through an HTTP proxy, by a ``CONNECT`` tunnel.

Twisted's ``ProxyAgent`` only sends plain-http requests to a proxy (in
absolute form), which is no way to reach an https upstream: the proxy would
see the request and the certificate would never be checked by us.  Here the
proxy is asked to open a raw TCP tunnel to the upstream (``CONNECT
host:port``), and TLS runs inside it, end to end, verified exactly as a
direct connection is (the same `IPolicyForHTTPS`).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import HostnameAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from proxypypi.upstream.fetch import FetchError, UpstreamTimeout

#: The largest proxy answer to ``CONNECT`` we read (status line and headers).
#: A real one is a few hundred bytes; anything bigger is not a proxy
#: talking HTTP, and must not make us buffer without end.
MAX_HEAD = 16 * 1024

_CLOSED = Failure(ConnectionDone())


#: What to do about the refusals that no retry can cure.
_REFUSAL_HINTS = {
    407: "; give its credentials in --upstream-proxy (http://user:password@host:port)",
    403: "; the proxy forbids tunnels to this host and port: allow them in its configuration",
}


class TunnelError(FetchError):
    """
    The proxy did not open the tunnel: it refused (a non-2xx status), sent
    something that is not an HTTP answer, or closed the connection.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def authority(host: str, port: int) -> str:
    """
    The ``host:port`` form of a ``CONNECT`` target (an IPv6 literal in
    brackets, so that its colons do not read as the port).
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def parse_response_head(head: bytes) -> tuple[int, str]:
    """
    The status code and reason phrase of a proxy's answer to ``CONNECT``.

    Headers are not needed: a 2xx answer has no body (RFC 9110 §9.3.6) and
    what follows the head already belongs to the tunnel.

    :param head: the answer up to, not including, the empty line.
    :raises TunnelError: when the status line is not HTTP.
    """
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        shown = line[:80].decode("ascii", "replace")
        raise TunnelError(f"proxy answered CONNECT with something that is not HTTP: {shown!r}")
    reason = parts[2].decode("latin-1").strip() if len(parts) == 3 else ""
    return int(parts[1]), reason


@attrs.define(eq=False)
class _TunnelProtocol(Protocol):
    """
    The connection to the proxy: sends ``CONNECT``, reads the answer, then
    steps aside.  Once the tunnel is open every byte is passed to the
    protocol built by the caller's factory, which writes straight to the
    proxy connection (the bytes then flow through to the upstream).
    """

    reactor: IReactorTime
    target: str
    authorization: bytes | None
    timeout: float
    protocol_factory: IProtocolFactory
    address: IAddress
    result: Deferred[IProtocol]
    _buffer: bytes = b""
    _inner: IProtocol | None = None
    _timer: IDelayedCall | None = None
    _error: Exception | None = None

    def connectionMade(self) -> None:
        lines = [f"CONNECT {self.target} HTTP/1.1".encode(), b"Host: " + self.target.encode()]
        if self.authorization is not None:
            lines.append(b"Proxy-Authorization: " + self.authorization)
        assert self.transport is not None
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self._timer = self.reactor.callLater(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(
            UpstreamTimeout(
                f"proxy did not answer CONNECT to {self.target} within {self.timeout:g}s"
            )
        )

    def _fail(self, error: Exception) -> None:
        """Fail the connection attempt and drop the proxy connection."""
        self._cancel_timer()
        self._error = error
        if not self.result.called:
            self.result.errback(Failure(error))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        """Give up (the caller cancelled); the result is already failed."""
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        if self._error is not None or self.result.called:
            return
        self._buffer += data
        head, found, rest = self._buffer.partition(b"\r\n\r\n")
        if not found:
            if len(self._buffer) > MAX_HEAD:
                self._fail(TunnelError(f"proxy's answer to CONNECT to {self.target} is too long"))
            return
        if len(head) > MAX_HEAD:
            self._fail(TunnelError(f"proxy's answer to CONNECT to {self.target} is too long"))
            return
        self._buffer = b""
        try:
            code, reason = parse_response_head(head)
        except TunnelError as e:
            self._fail(e)
            return
        if not 200 <= code < 300:
            refused = f"proxy refused CONNECT to {self.target}: {code} {reason}".rstrip()
            hint = _REFUSAL_HINTS.get(code)
            self._fail(TunnelError(refused + (hint or ""), unreachable=hint is not None))
            return
        self._open(rest)

    def _open(self, rest: bytes) -> None:
        self._cancel_timer()
        inner = self.protocol_factory.buildProtocol(self.address)
        if inner is None:
            self._fail(TunnelError(f"no protocol for the tunnel to {self.target}"))
            return
        self._inner = inner
        assert self.transport is not None
        inner.makeConnection(self.transport)
        self.result.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        self._cancel_timer()
        if self._inner is not None:
            self._inner.connectionLost(reason)
        elif not self.result.called:
            self.result.errback(
                Failure(
                    TunnelError(
                        f"proxy closed the connection before opening the tunnel to {self.target}"
                    )
                )
            )


@implementer(IStreamClientEndpoint)
@attrs.define
class TunnelEndpoint:
    """
    A client endpoint to ``host``:``port`` through an HTTP proxy's ``CONNECT``.

    :ivar reactor: for the timeout of the proxy's answer.
    :ivar proxy_endpoint: how to reach the proxy (its own connect timeout).
    :ivar host: the target host name, as the proxy should resolve it (we do
        not resolve it: inside a proxied network we often cannot).
    :ivar port: the target port.
    :ivar authorization: a ``Proxy-Authorization`` value, if the proxy
        wants one (`proxypypi.config.urls.basic_authorization`).
    :ivar timeout: seconds to wait for the proxy's answer once connected.
    """

    reactor: IReactorTime
    proxy_endpoint: IStreamClientEndpoint
    host: str
    port: int
    authorization: bytes | None = None
    timeout: float = 30.0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect to the proxy and open the tunnel.

        :returns: a Deferred firing with ``protocolFactory``'s protocol once
            the tunnel is open, or failing with `TunnelError` (refused,
            closed), `UpstreamTimeout` (no answer), or the failure to reach
            the proxy.  Cancelling it drops the proxy connection.
        """
        connecting: Deferred[Any] | None = None

        def cancel(_: Deferred[IProtocol]) -> None:
            if connecting is not None:
                connecting.cancel()
            tunnel.abort()

        result: Deferred[IProtocol] = Deferred(cancel)
        tunnel = _TunnelProtocol(
            self.reactor,
            authority(self.host, self.port),
            self.authorization,
            self.timeout,
            protocolFactory,
            HostnameAddress(self.host.encode("idna"), self.port),
            result,
        )

        def not_connected(f: Failure) -> None:
            if not result.called:
                result.errback(f)

        connecting = self.proxy_endpoint.connect(Factory.forProtocol(lambda: tunnel))
        connecting.addErrback(not_connected)
        return result


@implementer(IAgentEndpointFactory)
@attrs.define
class TunnellingEndpointFactory:
    """
    Endpoints for an ``Agent`` (``Agent.usingEndpointFactory``): https URIs
    through a ``CONNECT`` tunnel with TLS inside it.

    Plain http is not tunnelled here but sent to the proxy as an ordinary
    proxied request (``ProxyAgent``): many proxies allow ``CONNECT`` to port
    443 only, and plain http gains nothing from a tunnel.

    :ivar tls_policy: verifies the upstream's certificate and host name, as
        for a direct connection.
    """

    reactor: IReactorTime
    proxy_endpoint: IStreamClientEndpoint
    tls_policy: IPolicyForHTTPS
    authorization: bytes | None = None
    timeout: float = 30.0

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme != b"https":
            raise SchemeNotSupported(f"only https is tunnelled, not {uri.scheme!r}")
        host = uri.host.decode("ascii").strip("[]")
        tunnel = TunnelEndpoint(
            self.reactor, self.proxy_endpoint, host, uri.port, self.authorization, self.timeout
        )
        return wrapClientTLS(self.tls_policy.creatorForNetloc(uri.host, uri.port), tunnel)
