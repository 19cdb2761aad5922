# -*- test-case-name: tests.test_logs -*-
"""
The effective configuration, logged at start-up as understood, and what to
do next once the service listens.
"""

from __future__ import annotations

import os
import socket

from twisted.logger import Logger

from proxypypi import __version__
from proxypypi.config.model import Config
from proxypypi.config.urls import display_url
from proxypypi.sizes import format_size

log = Logger()


def _size(value: int | None) -> str:
    return "unbounded" if value is None else format_size(value)


def log_configuration(config: Config) -> None:
    """
    Log the effective configuration, one event per line (so that JSON log
    lines keep flat keys): the upstreams as understood, storage, limits,
    switches and listen endpoints.  The first line keeps the one-line
    summary of the upstreams.
    """
    log.info(
        "proxypypi {version}: upstreams {upstreams}; effective configuration follows",
        version=__version__,
        upstreams=config.describe(),
    )
    if config.upstream_reason is not None:
        log.info(
            "  upstream: no --upstream given, so {upstream_reason}",
            upstream_reason=config.upstream_reason,
        )
    for rank, group in enumerate(config.upstreams, 1):
        for u in group:
            idle = u.idle_timeout if u.idle_timeout is not None else config.download_idle_timeout
            log.info(
                "  upstream group {group}: {url} weight {weight:g}; timeouts: connect "
                "{connect_timeout:g}s, first byte {first_byte_timeout:g}s, idle {idle_timeout:g}s",
                group=rank,
                url=display_url(u.url),
                weight=u.weight,
                connect_timeout=u.connect_timeout,
                first_byte_timeout=u.first_byte_timeout,
                idle_timeout=idle,
            )
    path = os.path.abspath(config.storage)
    log.info("  storage: {storage} ({path})", storage=config.storage, path=path)
    log.info(
        "  limits: page TTL {page_ttl:g}s, negative TTL {negative_ttl:g}s, max cache size "
        "{max_cache_size_text}, max upload size {max_upload_size_text}, max page size "
        "{max_page_bytes_text}",
        page_ttl=config.page_ttl,
        negative_ttl=config.negative_ttl,
        max_cache_size=config.max_cache_size,
        max_cache_size_text=_size(config.max_cache_size),
        max_upload_size=config.max_upload_size,
        max_upload_size_text=_size(config.max_upload_size),
        max_page_bytes=config.max_page_bytes,
        max_page_bytes_text=_size(config.max_page_bytes),
    )
    log.info(
        "  offline: {offline}; uploads: {uploads}; credentials for reads: {auth_read}; "
        "trusted proxies: {trusted_proxies_text}; upstream proxy: {upstream_proxy}",
        offline="yes" if config.offline else "no",
        uploads="off" if config.auth_file is None else f"on (users in {config.auth_file})",
        auth_read="required" if config.auth_read else "not required",
        trusted_proxies=list(config.trusted_proxies),
        trusted_proxies_text=", ".join(config.trusted_proxies) or "none",
        upstream_proxy=(
            display_url(config.upstream_proxy)
            if config.upstream_proxy
            else "as the environment names (https_proxy, http_proxy, no_proxy), if any"
        ),
    )
    for endpoint in config.listen:
        log.info("  listen endpoint: {endpoint}", endpoint=endpoint)




def service_urls(address: object, description: str) -> tuple[str, str] | None:
    """
    The index URL and the status page URL of a bound address, or ``None``
    for one that has no URL (a Unix socket).  A wildcard address is shown
    by this machine's name, which other machines can use.

    :param description: the ``--listen`` value (``ssl:`` means https).
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if description.startswith("ssl:") else "http"
    base = f"{scheme}://{host}:{port}/"
    return f"{base}simple/", base


def cannot_listen(description: str, error: BaseException) -> str:
    """
    Why an endpoint could not be bound, and what to do, in one line (the
    port's owner is another program far more often than a bad value).
    """
    reason: object = getattr(error, "socketError", None) or error
    reason = getattr(reason, "strerror", None) or reason
    return (
        f"cannot listen on {description} ({reason}); stop whatever uses it, "
        "or choose another with --listen (e.g. --listen tcp:3142:interface=127.0.0.1)"
    )


def announce_listening(address: object, description: str) -> None:
    """
    Where the service listens and what a newcomer does next, on the first
    screen of the log: the index URL to give pip and uv, ready to paste,
    and the status page.
    """
    log.info(
        "listening on {host}:{port}",
        host=getattr(address, "host", getattr(address, "name", "?")),
        port=getattr(address, "port", "-"),
    )
    urls = service_urls(address, description)
    if urls is None:
        return
    index, status = urls
    log.info(
        "give pip and uv this index: export PIP_INDEX_URL={index} UV_DEFAULT_INDEX={index}",
        index=index,
    )
    log.info("status page: {status}", status=status)
