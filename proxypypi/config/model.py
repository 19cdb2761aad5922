# -*- test-case-name: tests.test_config -*-
"""
The service's settings, validated once, as immutable values.

Both entry points (the twistd plugin's options and ``proxypypi.tac`` with
its TOML file) end up here, so a setting means the same thing whichever way
it was given (`proxypypi.config.settings` reads them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import attrs

from proxypypi.config.policy import PolicyConfig
from proxypypi.config.urls import (
    ConfigError,
    basic_authorization,
    display_url,
    parse_file_host,
    proxy_address,
    without_credentials,
)

DEFAULT_LISTEN = "tcp:3141:interface=127.0.0.1"
DEFAULT_STORAGE = "./proxypypi-data"



def _positive(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be a positive number, not {value!r}")

    return check


@attrs.frozen
class UpstreamConfig:
    """
    One upstream simple index (or mirror).

    The timeouts default low enough that a member that stalls is given up
    on, and the next one asked, well before an installer's own read timeout
    (pip's is 15 s) fails the install.

    :ivar url: the simple-index base URL, always ending in ``/``, as given
        (credentials included: use `address` to name it).
    :ivar weight: this member's share of its group's load.
    :ivar connect_timeout: seconds to establish a connection.
    :ivar first_byte_timeout: seconds from request to response headers.
    :ivar idle_timeout: seconds without a byte mid-body before the member
        counts as failed for that request; ``None`` uses the service's
        ``download-idle-timeout``.
    """

    url: str = attrs.field(repr=display_url)
    weight: float = attrs.field(default=1.0, validator=_positive("weight"))
    connect_timeout: float = attrs.field(default=5.0, validator=_positive("connect-timeout"))
    first_byte_timeout: float = attrs.field(default=10.0, validator=_positive("first-byte-timeout"))
    idle_timeout: float | None = attrs.field(default=None, validator=_positive("idle-timeout"))

    @property
    def address(self) -> str:
        """
        The URL without credentials: what the upstream is called everywhere.
        """
        return without_credentials(self.url)

    @property
    def authorization(self) -> bytes | None:
        """
        Basic authorization for the credentials of the URL, if it has any.
        """
        return basic_authorization(self.url)



#: A ``--trusted-proxy`` value: a network (a single address is a network of
#: one), or ``unix`` for every client of a Unix socket endpoint.
TrustedProxy = ipaddress.IPv4Network | ipaddress.IPv6Network | str


def parse_trusted_proxies(values: Iterable[str]) -> tuple[TrustedProxy, ...]:
    """
    Parse ``--trusted-proxy`` values: addresses (``10.0.0.5``, ``::1``),
    networks (``10.0.0.0/8``), or ``unix``.

    :raises ConfigError: naming a value that is none of these.
    """
    out: list[TrustedProxy] = []
    for value in values:
        text = value.strip()
        if text == "unix":
            out.append(text)
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as e:
            raise ConfigError(
                f"trusted proxy {value!r} is not an address, a network (10.0.0.0/8) or 'unix'"
            ) from e
    return tuple(out)



@attrs.frozen
class Config:
    """
    Everything the service needs to start.

    :ivar upstreams: groups in rank order; each group's members share load.
    :ivar page_ttl: seconds a cached project page counts as fresh.
    :ivar client_max_age: ``Cache-Control: max-age`` sent with index pages;
        short, because installers make no request at all within it.
    :ivar download_idle_timeout: seconds without a byte from the upstream
        after which a response is abandoned (and the download resumed from
        another member): the default of each upstream's ``idle-timeout``.
        Under pip's 15 s read timeout, so the switch happens before the
        installer gives up.
    :ivar max_page_bytes: the largest upstream page accepted.
    :ivar page_memory: obsolete, accepted and ignored: pages are served
        from their files on disk, and memory keeps only small facts of them.
    :ivar negative_ttl: seconds an upstream 404 for a project is remembered.
    :ivar offline: serve only what is stored; never contact an upstream.
    :ivar forget_removed: drop stored files from pages once the upstream
        stops listing them (by default they stay installable).
    :ivar max_cache_size: bytes of upstream files to keep; least recently
        used files are evicted beyond it.  ``None``: unbounded.
    :ivar auth_file: an htpasswd file (bcrypt entries) of users who may
        upload; ``None`` disables uploads.
    :ivar auth_read: require a valid user for reads as well.
    :ivar max_upload_size: the largest upload accepted, in bytes.
    :ivar max_file_size: the largest upstream file fetched and stored, in
        bytes, whatever the page says (a page may give no size at all).
    :ivar allow_overwrite: let an upload replace a private file of the same
        name with different content.
    :ivar merge_upstream: private projects whose upstream files stay listed.
    :ivar log_format: ``text`` or ``json`` (one JSON object per line).
    :ivar trusted_proxies: addresses whose ``X-Forwarded-*`` headers count.
    :ivar file_hosts: ``--file-host`` values (``HOST[:PORT]``): when given,
        the only hosts besides the upstreams' own that files are fetched
        from, on any address (`proxypypi.upstream.reach`).
    :ivar upstream_proxy: an HTTP proxy URL (``http://[user:password@]host:port``)
        for reaching upstreams: https ones through a ``CONNECT`` tunnel
        (TLS still verified end to end), plain-http ones as proxied requests.
        ``None``: the one the environment names (`environment_proxy`), if any.
    :ivar workers: worker processes serving the listening sockets and the
        storage together; ``1`` is a single process; ``None``, one per CPU.
    :ivar header_timeout: seconds for a request's head to arrive whole.
    :ivar max_connections: client connections open at most; ``None``: the
        file descriptor limit less a reserve.
    :ivar max_client_connections: client connections open at most from
        one address (trusted proxies are not capped).
    :ivar admins: users who may change every private project.
    :ivar policy: the supply-chain policy (cooldown, deny and allow rules).
    :ivar upstream_reason: why the upstream is what it is, when it was not
        given but found (`proxypypi.config.defaultindex`); logged at start.
    """

    upstreams: tuple[tuple[UpstreamConfig, ...], ...]
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    storage: str = DEFAULT_STORAGE
    page_ttl: float = attrs.field(default=600.0, validator=_positive("page-ttl"))
    client_max_age: int = 60
    download_idle_timeout: float = attrs.field(
        default=10.0, validator=_positive("download-idle-timeout")
    )
    max_page_bytes: int = 32 * 1024 * 1024
    page_memory: int = attrs.field(default=128 * 1024 * 1024, validator=_positive("page-memory"))
    negative_ttl: float = 60.0
    offline: bool = False
    forget_removed: bool = False
    max_cache_size: int | None = None
    auth_file: str | None = None
    auth_read: bool = False
    max_upload_size: int = 1024**3
    max_file_size: int = attrs.field(default=20 * 1024**3, validator=_positive("max-file-size"))
    allow_overwrite: bool = False
    merge_upstream: tuple[str, ...] = ()
    log_format: str = attrs.field(default="text", validator=attrs.validators.in_(("text", "json")))
    trusted_proxies: tuple[str, ...] = ()
    upstream_proxy: str | None = None
    workers: int | None = None
    file_hosts: tuple[str, ...] = ()
    header_timeout: float = attrs.field(default=20.0, validator=_positive("header-timeout"))
    max_connections: int | None = attrs.field(
        default=None, validator=_positive("max-connections")
    )
    max_client_connections: int = attrs.field(
        default=128, validator=_positive("max-client-connections")
    )
    admins: tuple[str, ...] = ()
    policy: PolicyConfig = attrs.field(factory=PolicyConfig)
    upstream_reason: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.upstreams:
            raise ConfigError(
                "no upstream given: add --upstream URL (e.g. "
                "--upstream https://mirror.example/simple/)"
            )
        if not self.listen:
            raise ConfigError("no listen endpoint given")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(
                f"--workers must be at least 1, not {self.workers} "
                "(1 is a single process; leave it out for one per CPU)"
            )
        parse_trusted_proxies(self.trusted_proxies)
        if self.auth_read and self.auth_file is None:
            raise ConfigError(
                "--auth-read needs --auth-file FILE (an htpasswd file of bcrypt entries, "
                "made with proxypypi-admin adduser USER --auth-file FILE)"
            )
        if self.upstream_proxy is not None:
            proxy_address(self.upstream_proxy)
        for host in self.file_hosts:
            parse_file_host(host)
        seen: set[str] = set()
        for group in self.upstreams:
            if not group:
                raise ConfigError("an upstream group has no member")
            for member in group:
                if member.url in seen:
                    raise ConfigError(f"upstream {member.url} is listed twice")
                seen.add(member.url)

    def describe(self) -> str:
        """
        The upstreams as understood, for the first log line: groups in rank
        order (``>``), members of a group joined by ``+`` with their weights.
        """

        def member(u: UpstreamConfig, shared: bool) -> str:
            url = display_url(u.url)
            return f"{url} (weight {u.weight:g})" if shared else url

        groups = [" + ".join(member(u, len(group) > 1) for u in group) for group in self.upstreams]
        return " > ".join(f"[{g}]" for g in groups)


