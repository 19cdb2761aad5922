# -*- test-case-name: tests.test_logs -*-
"""
The effective configuration, logged at start-up as understood.
"""

from __future__ import annotations

import os

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


