"""
Test doubles shared by the test suite and the benchmark: distribution
builders (`proxypypi.testing.dists`) and a fake upstream index that can be
told to misbehave (`proxypypi.testing.index`).
"""

from proxypypi.testing.dists import Dist, make_sdist, make_wheel
from proxypypi.testing.index import FakeIndex, RecordedRequest, serve
from proxypypi.testing.responses import Fault

__all__ = [
    "Dist",
    "FakeIndex",
    "Fault",
    "RecordedRequest",
    "make_sdist",
    "make_wheel",
    "serve",
]
