# -*- test-case-name: tests.test_tunnel,tests.test_failover -*-
"""
The HTTP agents that reach the upstreams: pooled connections, TLS verified
against the system's trust roots, redirects followed, every request and
redirect judged by where it goes (`proxypypi.upstream.reach`), credentials
in an upstream's URL sent to it as Basic authorization, and an HTTP proxy
when one is configured or named by the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ProxyAgent,
    RedirectAgent,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from proxypypi.config.model import UpstreamConfig
from proxypypi.config.urls import (
    basic_authorization,
    display_url,
    environment_proxy,
    parse_file_host,
    proxy_address,
)
from proxypypi.upstream.reach import JudgedAgent, Partition, Reach, ReachEndpoints, own_address
from proxypypi.upstream.tunnel import TunnellingEndpointFactory

#: Redirects followed for one request, each judged like the first hop.
REDIRECT_LIMIT = 5

log = Logger()


@implementer(IAgent)
@attrs.define
class _ProxiedAgent:
    """
    Requests through an HTTP proxy, chosen per request by scheme: https in a
    ``CONNECT`` tunnel (TLS end to end, verified by us), plain http as an
    ordinary proxied request.  Per request rather than per upstream, because
    a redirect may cross from one scheme to the other.

    :ivar authorization: ``Proxy-Authorization`` for plain-http requests
        (the tunnel sends its own, on ``CONNECT``, never to the upstream).
    """

    tunnelled: IAgent
    plain: IAgent
    authorization: bytes | None = None

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        if uri.startswith(b"https:"):
            return self.tunnelled.request(method, uri, headers, bodyProducer)
        if self.authorization is not None:
            headers = headers.copy() if headers is not None else Headers()
            headers.setRawHeaders(b"proxy-authorization", [self.authorization])
        return self.plain.request(method, uri, headers, bodyProducer)


def upstream_agents(
    reactor: Any,
    connections: HTTPConnectionPool,
    proxy: str | None = None,
    tls_policy: IPolicyForHTTPS | None = None,
    *,
    proxy_from_environment: bool = False,
    file_hosts: Sequence[str] = (),
) -> Callable[[UpstreamConfig], IAgent]:
    """
    Real agents: pooled connections, TLS verified against the system's
    trust roots (with service_identity), redirects followed (at most
    `REDIRECT_LIMIT`; a loop is a failure of the upstream), each request
    and hop sent only where `Reach` allows.

    :param proxy: an HTTP proxy URL to send every request through: https in
        a ``CONNECT`` tunnel (`proxypypi.upstream.tunnel`), plain http as proxied
        requests; credentials in the URL go to the proxy as Basic
        ``Proxy-Authorization``.
    :param tls_policy: how upstream certificates are checked; the default
        trusts the system's roots, tests pass their own.
    :param proxy_from_environment: without ``proxy``, reach each upstream
        through the proxy the environment names for it, if any
        (`environment_proxy`).
    :param file_hosts: ``--file-host`` values (`Reach.file_hosts`).
    :raises ConfigError: (from the returned factory) when the environment
        names a proxy that cannot be used.
    """
    tls = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()
    hosts = frozenset(parse_file_host(h) for h in file_hosts)

    def through(proxy_url: str, upstream: UpstreamConfig) -> IAgent:
        authorization = basic_authorization(proxy_url)
        host, port = proxy_address(proxy_url)
        endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=upstream.connect_timeout)
        tunnels = TunnellingEndpointFactory(
            reactor, endpoint, tls, authorization, timeout=upstream.connect_timeout
        )
        return _ProxiedAgent(
            Agent.usingEndpointFactory(reactor, tunnels, pool=connections),
            ProxyAgent(endpoint, reactor, pool=connections),
            authorization,
        )

    def agent_for(upstream: UpstreamConfig) -> IAgent:
        reach = Reach(own_address(upstream.address), hosts)
        chosen = proxy
        if chosen is None and proxy_from_environment:
            chosen = environment_proxy(upstream.address)
            if chosen is not None:
                log.info(
                    "reaching {upstream} through {proxy}, the proxy the environment names",
                    upstream=upstream.address,
                    proxy=display_url(chosen),
                )
        agent: IAgent
        if chosen is not None:
            # The proxy resolves names: only the URL can be judged.
            agent = through(chosen, upstream)
        else:
            endpoints = ReachEndpoints(reactor, tls, upstream.connect_timeout, reach)
            agent = Agent.usingEndpointFactory(
                reactor, endpoints, pool=Partition(connections, upstream.address)
            )
        judged = JudgedAgent(agent, reach, upstream.authorization)
        return RedirectAgent(judged, redirectLimit=REDIRECT_LIMIT)

    return agent_for


