"""
The twistd plugin: ``twistd proxypypi``.  Imports nothing heavy; twistd
loads `proxypypi.service.tap` only when this plugin is used.
"""

from twisted.application.service import ServiceMaker

proxypypi = ServiceMaker(
    "proxypypi",
    "proxypypi.service.tap",
    "A caching proxy for the Python package index",
    "proxypypi",
)
