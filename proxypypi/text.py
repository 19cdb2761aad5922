# -*- test-case-name: tests.test_text -*-
"""
Text from outside (an upstream's URLs and reasons, a client's path) made
safe for the places people read: log lines, error bodies, ``/health``.

An upstream is not trusted: a URL or reason carrying terminal escape
sequences, carriage returns or bidirectional overrides could rewrite
what an operator sees in a terminal or forge a log line.  Such
characters are shown as Python escapes (``\\x1b``) instead.
"""

from __future__ import annotations

#: The whitespace a multi-line message may keep (the text log indents
#: continuation lines, so they cannot pass for lines of their own).
_KEPT = frozenset("\n\t")


def _escape(char: str) -> str:
    if char.isprintable() or char in _KEPT:
        return char
    return repr(char)[1:-1]


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """
    ``text`` with every non-printable character (controls, format
    characters such as bidirectional overrides, separators other than the
    space) written as its Python escape.

    :param keep_newlines: keep line feeds and tabs, for a log message
        whose continuation lines the log indents.
    """
    if text.isprintable():
        return text  # the common case, checked at C speed
    if keep_newlines:
        return "".join(map(_escape, text))
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
