# -*- test-case-name: tests.test_workers -*-
"""
Listening sockets shared by worker processes.

The supervisor binds every ``--listen`` endpoint once, as a single process
would, and never accepts on them; each worker inherits the descriptors and
accepts from the same queues (`AdoptedEndpoint`), one connection per
wake-up (`proxypypi.internals.accept_one_per_wake`).  A worker busy with
a request is slower to return to its loop, so the idle ones take the new
connections: the kernel's shared accept queue balances by load, where
``SO_REUSEPORT`` would balance by a hash of the client's address and port.  Unix sockets
and TLS work the same way (TLS is layered in the worker, over the adopted
TCP socket).
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from proxypypi.internals import accept_one_per_wake

#: A separator of an endpoint description's fields (not an escaped colon).
_FIELD = re.compile(r"(?<!\\):")

#: The first descriptor number the workers receive listening sockets on
#: (0 to 2 are the standard streams, 3 and 4 the supervisor's pipes).
FIRST_LISTEN_FD = 5


@attrs.frozen
class Inherited:
    """
    A listening socket as a worker receives it.

    :ivar description: the ``--listen`` value it was bound from.
    :ivar fd: its descriptor in the worker.
    :ivar family: its address family (``socket.AF_INET``, ``AF_INET6``,
        ``AF_UNIX``).
    """

    description: str
    fd: int
    family: int

    def to_arg(self) -> str:
        return f"{self.fd}:{self.family}:{self.description}"

    @classmethod
    def from_arg(cls, arg: str) -> Inherited:
        fd, family, description = arg.split(":", 2)
        return cls(description, int(fd), int(family))


def family_of(port: IListeningPort) -> int:
    """
    The address family of a bound port.
    """
    sock = port.socket  # type: ignore[attr-defined]
    family: int = sock.family
    return family


def bind(reactor: Any, description: str) -> IListeningPort:
    """
    Bind and listen on ``description`` at once, without accepting (the
    supervisor's part): the port stays open for the workers, and out of
    the reactor.  A TLS endpoint is bound as plain TCP here; the workers
    add TLS.

    :raises Exception: why it could not be bound (TCP and Unix endpoints
        bind synchronously, so the answer is known on return).
    """
    endpoint = endpoints.serverFromString(reactor, _plain(description))
    outcome: list[IListeningPort | Failure] = []
    endpoint.listen(Factory.forProtocol(Protocol)).addBoth(outcome.append)
    if not outcome:
        raise RuntimeError(f"the endpoint {description} did not bind at once")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    port: IListeningPort = outcome[0]
    port.stopReading()  # type: ignore[attr-defined]
    return port


def _plain(description: str) -> str:
    """
    The TCP endpoint under a ``ssl:`` one (its port, interface and backlog).
    """
    kind, _, rest = description.partition(":")
    if kind != "ssl":
        return description
    # Colons inside values (an IPv6 interface) are escaped with a backslash.
    port, *options = _FIELD.split(rest)
    keep = [o for o in options if o.split("=", 1)[0] in ("interface", "backlog")]
    return ":".join(["tcp", port, *keep])


@implementer(IStreamServerEndpoint)
@attrs.define
class AdoptedEndpoint:
    """
    An endpoint that listens on an inherited socket (the worker's part); a
    ``ssl:`` description gets its TLS layered here, with the key and
    certificate it names, read by Twisted's own endpoint parser.
    """

    reactor: Any
    inherited: Inherited

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        description = self.inherited.description
        if description.startswith("ssl:"):
            # Twisted's own parser reads the key and certificate; its TLS
            # endpoint keeps the options it built from them.
            tls: Any = endpoints.serverFromString(self.reactor, description)
            factory = TLSMemoryBIOFactory(tls._sslContextFactory, False, factory)
        port: IListeningPort = self.reactor.adoptStreamPort(
            self.inherited.fd, self.inherited.family, factory
        )
        accept_one_per_wake(port)
        return succeed(port)
