"""
proxypypi's benchmark, run from the repository root::

    python -m bench --setup     # once: nginx, wrk, py-spy, uv
    python -m bench             # the issue-3 table: cold, cached, pip
    python -m bench --list      # every scenario

``__main__`` is the command line; ``scenarios/`` holds one module per
scenario, registered in ``scenarios/__init__.py``; ``context`` is what the
scenarios share, ``report`` the table they fill in.  The harness is split
by job: ``processes`` (starting and stopping), ``services`` (the fake
upstream and the proxy), ``references`` (nginx, the twisted.web floor,
``twistd web``), ``rss`` (memory), ``clients`` (HTTP clients, wrk, pip),
``spy`` (py-spy profiles) and ``tools`` (what ``--setup`` installs).
``upstream.py``, ``floor.py`` and ``drain.py`` are started as processes.

It runs as a package from the repository root so that the ``proxypypi``
it imports is the one of this checkout, not whichever the environment has
installed; the processes it starts get the same one on ``PYTHONPATH``.
"""

import os

#: The repository root: the benchmark measures the ``proxypypi`` found here.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BenchError(Exception):
    """
    The benchmark cannot go on (a process did not start, a tool is missing).
    """
