# -*- test-case-name: tests.test_status -*-
"""
The address clients reach this server at, for every absolute URL we show.

A request names the server in its ``Host`` header, and its scheme is
``https`` when it came over TLS.  Behind a reverse proxy both describe the
hop from the proxy, so the proxy's ``X-Forwarded-Proto`` and
``X-Forwarded-Host`` say what the client used.  Those headers are honoured
only when the connection comes from a ``--trusted-proxy``: anyone else
could send them to make the server advertise an address of their
choosing.  When a trusted proxy appends to a header that a client already
sent, the last value is the one it added, so the last value is used.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.iweb import IRequest

from proxypypi.config.model import TrustedProxy, parse_trusted_proxies

#: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``: nothing that could
#: break out of a URL's authority.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.\-_]*)|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")

_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=16)
def _trusted(values: tuple[str, ...]) -> tuple[TrustedProxy, ...]:
    return parse_trusted_proxies(values)


def is_trusted(peer: object, trusted: tuple[str, ...]) -> bool:
    """
    Whether the connection's peer address is one of the ``trusted`` proxies.
    """
    if not trusted:
        return False
    networks = _trusted(trusted)
    if isinstance(peer, UNIXAddress):
        return "unix" in networks
    if not isinstance(peer, IPv4Address | IPv6Address):
        return False
    try:
        address = ipaddress.ip_address(peer.host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(
        not isinstance(n, str) and n.version == address.version and address in n for n in networks
    )


def _last(request: IRequest, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    last = values[-1].decode("latin-1").split(",")[-1].strip()
    return last or None


def _local_host(request: IRequest) -> str:
    """
    ``host:port`` of the local end of the connection, for requests without
    a usable ``Host`` header (HTTP/1.0).
    """
    address = request.getHost()
    host = getattr(address, "host", None) or "localhost"
    port = getattr(address, "port", None)
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def _strip_default_port(host: str, scheme: str) -> str:
    if host.endswith("]"):
        return host  # an IPv6 literal without a port
    name, sep, port = host.rpartition(":")
    if sep and port == str(_DEFAULT_PORTS[scheme]):
        return name
    return host


def external_base(request: IRequest, trusted: tuple[str, ...]) -> str:
    """
    The URL of this server's root as the client reached it, e.g.
    ``https://proxy.example/``: scheme from TLS (or ``X-Forwarded-Proto``),
    host from ``Host`` (or ``X-Forwarded-Host``), the forwarded headers
    counting only when the peer is in ``trusted`` (``--trusted-proxy``).
    A default port is left out.

    :param trusted: the configured trusted proxies (``Config.trusted_proxies``).
    """
    scheme = "https" if request.isSecure() else "http"
    host = None
    header = request.getHeader(b"host")
    if header is not None:
        candidate = header.decode("latin-1").strip()
        if _HOST.match(candidate):
            host = candidate
    if is_trusted(request.getClientAddress(), trusted):
        proto = _last(request, b"x-forwarded-proto")
        if proto is not None and proto.lower() in _DEFAULT_PORTS:
            scheme = proto.lower()
        forwarded = _last(request, b"x-forwarded-host")
        if forwarded is not None and _HOST.match(forwarded):
            host = forwarded
    if host is None:
        host = _local_host(request)
    return f"{scheme}://{_strip_default_port(host.lower(), scheme)}/"


def client_key(request: IRequest, trusted: tuple[str, ...]) -> str | None:
    """
    Who a request comes from, to count a client's failed logins: its
    peer's address; behind a ``--trusted-proxy``, the address that proxy
    says it forwards for (the last ``X-Forwarded-For`` entry, which it
    added itself); ``unix`` for a Unix socket's clients.
    """
    peer = request.getClientAddress()
    if is_trusted(peer, trusted):
        forwarded = _last(request, b"x-forwarded-for")
        try:
            return str(ipaddress.ip_address(forwarded or ""))
        except ValueError:
            pass
    if isinstance(peer, UNIXAddress):
        return "unix"
    host = getattr(peer, "host", None)
    return host if isinstance(host, str) else None
