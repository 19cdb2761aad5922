# -*- test-case-name: tests.test_reach -*-
"""
Where an upstream's agent may connect (no server-side request forgery).

A page lists file URLs, and a response may redirect anywhere: a hostile or
compromised upstream could point the proxy at a service on its own host or
network (``http://127.0.0.1:6379/``, a cloud metadata address, the proxy's
own ``/health``) and have its answer served as a file.  So every request an
upstream's agent sends, each redirect hop included, is judged by `Reach`:

- the upstream's own host and port: always (the operator named them);
- else, with ``--file-host`` given: only the hosts it names, on any
  address (an internal mirror whose files live on another internal host);
- else: any http(s) host, but only if the address *actually connected to*
  is public.  The check is made on the connected socket's peer, before a
  byte is sent (`PublicOnly`), so a name that resolves to a public address
  when looked at and to ``127.0.0.1`` when connected (DNS rebinding) gains
  nothing.

Through an HTTP proxy the proxy resolves names, so only the URL can be
judged (literal addresses, the ``--file-host`` list); the proxy's own rules
must keep it off internal networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import URI, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from proxypypi.upstream.fetch import FetchError

#: The port a ``--file-host`` without one means, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443}

#: What fixes a refusal, said with it.
_FIX = "name the host with --file-host if it is a trusted internal file host"


class Refused(FetchError):
    """
    A request the upstream asked for (a file URL, a redirect) that the
    proxy will not send: not http(s), a host ``--file-host`` does not name,
    or an address that is not public.
    """


def special_address(text: str) -> str | None:
    """
    What makes an IP address one the proxy must not be sent to on an
    upstream's say-so (``"loopback"``, ``"private"``, ...), or ``None`` for
    a public address.  An IPv4 address mapped into IPv6 counts as itself;
    anything unreadable is special.
    """
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        return "unreadable"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, "is_" + kind):
            return kind.replace("_", "-")
    return None if address.is_global else "special-purpose"


def _literal(host: str) -> str | None:
    """
    ``host`` if it is an IP address literal (brackets of IPv6 taken off).
    """
    text = host.strip("[]")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text


@attrs.frozen
class Reach:
    """
    Where one upstream member's requests may go.

    :ivar own: the member's host (lowercase) and port: trusted, whatever
        its address.
    :ivar file_hosts: the ``--file-host`` values as (host, port or
        ``None`` for the scheme's default); when any is given, the only
        other hosts allowed, on any address.
    """

    own: tuple[str, int]
    file_hosts: frozenset[tuple[str, int | None]] = frozenset()

    def judge(self, scheme: str, host: str, port: int) -> bool:
        """
        Judge a request by its URL.

        :returns: whether the address connected to must still be checked
            (`PublicOnly`); ``False`` for a trusted host.
        :raises Refused: when the URL alone rules it out.
        """
        host = host.lower()
        if scheme not in DEFAULT_PORTS:
            raise Refused(f"refused to fetch a {scheme or 'schemeless'}: URL; only http(s)")
        if (host, port) == self.own:
            return False
        if self.file_hosts:
            if (host, port) in self.file_hosts or (
                port == DEFAULT_PORTS[scheme] and (host, None) in self.file_hosts
            ):
                return False
            raise Refused(
                f"refused to fetch from {host}:{port}: files come only from the upstream "
                "and the hosts --file-host names"
            )
        literal = _literal(host)
        kind = None if literal is None else special_address(literal)
        if kind is not None:
            raise Refused(f"refused to fetch from {host}:{port}, a {kind} address; {_FIX}")
        return True


def _peer_refusal(peer: object, host: str) -> Refused | None:
    """
    Why the address actually connected to must not be used, if it must not.
    """
    if not isinstance(peer, IPv4Address | IPv6Address):
        return Refused(f"refused to fetch from {host}: connected to a non-IP address; {_FIX}")
    kind = special_address(peer.host)
    if kind is None:
        return None
    return Refused(
        f"refused to fetch from {host}: it resolved to {peer.host}, a {kind} address; {_FIX}"
    )


class _Checked(ProtocolWrapper):
    """
    Looks at the peer of a new connection before the protocol above sees
    it: for a forbidden address the connection is aborted and nothing is
    ever sent (not even a TLS hello).
    """

    factory: _Checking
    refusal: Refused | None = None

    def makeConnection(self, transport: Any) -> None:
        self.refusal = _peer_refusal(transport.getPeer(), self.factory.host)
        if self.refusal is None:
            super().makeConnection(transport)
            return
        self.transport = transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.refusal is None:
            super().connectionLost(reason)


class _Checking(WrappingFactory):
    protocol = _Checked
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, host: str) -> None:
        super().__init__(wrapped)
        self.host = host


@implementer(IStreamClientEndpoint)
@attrs.frozen
class PublicOnly:
    """
    An endpoint whose connections count only when the peer's address is
    public (`special_address`); otherwise ``connect`` fails with `Refused`.
    """

    endpoint: IStreamClientEndpoint
    host: str

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        def unwrap(protocol: IProtocol) -> IProtocol:
            assert isinstance(protocol, _Checked)
            if protocol.refusal is not None:
                raise protocol.refusal
            wrapped: IProtocol = protocol.wrappedProtocol
            return wrapped

        return self.endpoint.connect(_Checking(factory, self.host)).addCallback(unwrap)


@implementer(IAgentEndpointFactory)
@attrs.frozen
class ReachEndpoints:
    """
    The endpoints of one member's direct (unproxied) agent: TCP, TLS for
    https, and the peer checked for hosts `Reach.judge` does not trust.
    """

    reactor: Any
    tls: IPolicyForHTTPS
    connect_timeout: float
    reach: Reach

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        :raises Refused: for a URL `Reach.judge` rules out (`JudgedAgent`
            refuses those before they get here).
        """
        scheme = uri.scheme.decode("ascii", "replace")
        if scheme not in DEFAULT_PORTS:
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        host = uri.host.decode("ascii")
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, host, uri.port, timeout=self.connect_timeout
        )
        if self.reach.judge(scheme, host, uri.port):
            endpoint = PublicOnly(endpoint, host)
        if scheme == "https":
            endpoint = wrapClientTLS(self.tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


@attrs.frozen
class Partition:
    """
    One member's share of the shared connection pool: its connections are
    kept under keys of its own, so a connection another member opened to a
    host it trusts is never reused for a request this member's `Reach`
    would have checked.
    """

    pool: HTTPConnectionPool
    tag: str

    @property
    def persistent(self) -> bool:
        return bool(self.pool.persistent)

    def getConnection(self, key: Hashable, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        d: Deferred[Any] = self.pool.getConnection((self.tag, key), endpoint)
        return d


@implementer(IAgent)
@attrs.frozen
class JudgedAgent:
    """
    Every request judged by `Reach` before it is sent (each redirect hop
    too: this agent sits below the redirecting one), and the upstream's
    own credentials (`basic_authorization` of its URL) added to requests
    to its own host and port only, as pip sends an index URL's.
    """

    agent: IAgent
    reach: Reach
    authorization: bytes | None = attrs.field(default=None, repr=False)

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        try:
            parsed = URI.fromBytes(uri)
            host = parsed.host.decode("ascii").strip("[]").lower()
            self.reach.judge(parsed.scheme.decode("ascii"), host, parsed.port)
        except Refused as e:
            return fail(e)
        except (ValueError, UnicodeDecodeError):
            return fail(Refused(f"refused to fetch {uri[:200]!r}: not a usable URL"))
        if self.authorization is not None and (host, parsed.port) == self.reach.own:
            headers = headers.copy() if headers is not None else Headers()
            headers.setRawHeaders(b"authorization", [self.authorization])
        return self.agent.request(method, uri, headers, bodyProducer)


def own_address(url: str) -> tuple[str, int]:
    """
    The host (lowercase) and port of an upstream URL, as `Reach` compares
    them.
    """
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
