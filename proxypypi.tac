# -*- mode: python -*-
"""
Run proxypypi with ``twistd -ny proxypypi.tac``.

Settings come from the TOML file named by the PROXYPYPI_CONFIG environment
variable (the same keys as the ``twistd proxypypi`` options); without an
upstream, the index pip and uv use here is the upstream.
"""

import os
import sys

from twisted.application import service
from twisted.internet import reactor

from proxypypi.config.defaultindex import find_default_index
from proxypypi.config.urls import ConfigError
from proxypypi.config.settings import build_config, load_toml
from proxypypi.service.compose import make_service
from proxypypi.cache.storage import StorageError

path = os.environ.get("PROXYPYPI_CONFIG")
if not path:
    sys.exit("proxypypi.tac: set PROXYPYPI_CONFIG to the path of a TOML settings file")
try:
    config = build_config(
        load_toml(path), default_index=lambda listen: find_default_index(os.environ, listen)
    )
    application = service.Application("proxypypi")
    # SIGHUP reads the file again for the policy's settings.
    reread = lambda: build_config(load_toml(path)).policy  # noqa: E731
    make_service(config, reactor, reread=reread).setServiceParent(application)
except (ConfigError, StorageError) as e:
    sys.exit(f"proxypypi.tac: {e}")
