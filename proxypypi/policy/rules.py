# -*- test-case-name: tests.test_policy_rules -*-
"""
Deny and allow rules: one a line, each a project name, a requirement with
a PEP 440 specifier (``requests>=2.99,<3``), a file name or a ``sha256:``
digest, followed by ``# reason``::

    # deny.txt
    evil-package                      # typosquat of a real project
    requests>=2.99,<3                 # hijacked releases
    flask-3.2.0-py3-none-any.whl      # broken wheel, use the sdist
    sha256:0123...cdef                # known malware

A file whose name ends in ``.toml`` holds the same as ``[[rule]]`` tables
(``match = "requests>=2.99,<3"``, ``reason = "..."``).  A file with any bad
rule is refused whole, every bad line named, so that a typo never leaves
the policy half applied.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping

import attrs
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName

from proxypypi.names import is_safe_filename, normalize, version_of
from proxypypi.simple.model import DistFile

#: The largest rules file read (a million rules is far more than anyone
#: writes; a larger file is a mistake, not a policy).
MAX_RULES_BYTES = 16 * 1024 * 1024

#: Endings of distribution file names (current and legacy formats).
_FILE_ENDINGS = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".egg", ".exe",
                 ".msi", ".rpm", ".dmg")  # fmt: skip

_SHA256 = re.compile(r"sha256:([0-9a-fA-F]{64})")


class RulesError(Exception):
    """
    A rules file that cannot be used: unreadable, or with bad rules (each
    named with its line).
    """


@attrs.frozen
class Rule:
    """
    One rule, and what it matches: a whole project (only ``project``),
    some of its versions (``specifier``), one file name, or one digest.

    :ivar text: the rule as written.
    :ivar where: ``FILE line N``, for messages.
    """

    text: str
    reason: str
    where: str
    project: NormalizedName | None = None
    specifier: SpecifierSet | None = None
    filename: str | None = None
    sha256: str | None = None

    def matches(self, project: NormalizedName, f: DistFile) -> bool:
        if self.sha256 is not None:
            return f.sha256 == self.sha256
        if self.filename is not None:
            return f.filename == self.filename
        if self.project != project:
            return False
        if self.specifier is None:
            return True
        version = version_of(f.filename, project)
        return version is not None and self.specifier.contains(version, prereleases=True)

    def describe(self) -> str:
        """
        ``deny.txt line 3 (requests>=2.99,<3): hijacked releases``.
        """
        why = f": {self.reason}" if self.reason else ""
        return f"{self.where} ({self.text}){why}"


def parse_rule(text: str, reason: str, where: str) -> Rule:
    """
    One rule from its text.

    :raises ValueError: saying what is wrong with it.
    """
    digest = _SHA256.fullmatch(text)
    if digest is not None:
        return Rule(text, reason, where, sha256=digest.group(1).lower())
    if text.startswith("sha256:"):
        raise ValueError(f"{text!r} is not sha256: followed by 64 hex digits")
    if text.lower().endswith(_FILE_ENDINGS):
        if not is_safe_filename(text) or " " in text:
            raise ValueError(f"{text!r} is not a distribution file name")
        return Rule(text, reason, where, filename=text)
    try:
        requirement = Requirement(text)
    except InvalidRequirement as e:
        raise ValueError(
            f"{text!r} is not a project name, a requirement (name>=1.0,<2), a file name "
            f"or sha256:<digest> ({e})"
        ) from e
    if requirement.url or requirement.marker or requirement.extras:
        raise ValueError(f"{text!r}: a rule takes no URL, environment marker or extras")
    project = normalize(requirement.name)
    assert project is not None  # packaging accepted the name
    specifier = requirement.specifier if str(requirement.specifier) else None
    return Rule(text, reason, where, project=project, specifier=specifier)


@attrs.frozen
class RuleSet:
    """
    The rules of one file, indexed so that matching a file costs a few
    dictionary lookups however many rules there are.

    :ivar path: the file they were read from.
    """

    path: str
    rules: tuple[Rule, ...]
    _by_project: Mapping[str, tuple[Rule, ...]]
    _by_filename: Mapping[str, Rule]
    _by_sha256: Mapping[str, Rule]

    @classmethod
    def of(cls, path: str, rules: Iterable[Rule]) -> RuleSet:
        rules = tuple(rules)
        by_project: dict[str, list[Rule]] = {}
        by_filename: dict[str, Rule] = {}
        by_sha256: dict[str, Rule] = {}
        for r in rules:
            if r.sha256 is not None:
                by_sha256.setdefault(r.sha256, r)
            elif r.filename is not None:
                by_filename.setdefault(r.filename, r)
            elif r.project is not None:
                by_project.setdefault(r.project, []).append(r)
        projects = {k: tuple(v) for k, v in by_project.items()}
        return cls(path, rules, projects, by_filename, by_sha256)

    def match(self, project: NormalizedName, f: DistFile) -> Rule | None:
        """
        The first rule (in file order within each kind) matching ``f``, a
        file of ``project``.
        """
        for r in self._by_project.get(project, ()):
            if r.matches(project, f):
                return r
        found = self._by_filename.get(f.filename)
        if found is not None:
            return found
        digest = f.sha256
        return None if digest is None else self._by_sha256.get(digest)

    def projects(self) -> frozenset[str]:
        """
        The projects named by name (not by file or digest).
        """
        return frozenset(self._by_project)


def _line_rules(text: str, path: str, need_reason: bool) -> tuple[list[Rule], list[str]]:
    name = os.path.basename(path)
    rules: list[Rule] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        body, _, reason = line.partition("#")
        body, reason = body.strip(), reason.strip()
        if not body:
            continue
        where = f"{name} line {number}"
        if need_reason and not reason:
            errors.append(f"{where}: {body!r} has no reason; write it after #: {body}  # why")
            continue
        try:
            rules.append(parse_rule(body, reason, where))
        except ValueError as e:
            errors.append(f"{where}: {e}")
    return rules, errors


def _toml_rules(text: str, path: str, need_reason: bool) -> tuple[list[Rule], list[str]]:
    name = os.path.basename(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [], [f"{name}: not valid TOML: {e}"]
    tables = doc.get("rule", [])
    unknown = sorted(set(doc) - {"rule"})
    errors = [f"{name}: unknown key {k!r} (rules are [[rule]] tables)" for k in unknown]
    if not isinstance(tables, list):
        return [], [*errors, f"{name}: rule must be [[rule]] tables"]
    rules: list[Rule] = []
    for number, table in enumerate(tables, start=1):
        where = f"{name} rule {number}"
        match = table.get("match") if isinstance(table, dict) else None
        reason = table.get("reason", "") if isinstance(table, dict) else ""
        if not isinstance(match, str) or not isinstance(reason, str):
            errors.append(f'{where}: write match = "..." and reason = "..."')
            continue
        if need_reason and not reason.strip():
            errors.append(f"{where}: {match!r} has no reason")
            continue
        try:
            rules.append(parse_rule(match.strip(), reason.strip(), where))
        except ValueError as e:
            errors.append(f"{where}: {e}")
    return rules, errors


def parse_rules(text: str, path: str, need_reason: bool) -> RuleSet:
    """
    The rules of a file's text (TOML when ``path`` ends in ``.toml``).

    :param need_reason: refuse rules without a reason (deny rules: their
        reason is what a refused client is told).
    :raises RulesError: naming every bad line.
    """
    parse = _toml_rules if path.endswith(".toml") else _line_rules
    rules, errors = parse(text, path, need_reason)
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise RulesError(f"{path} has bad rules: " + "; ".join(shown))
    return RuleSet.of(path, rules)


def file_signature(path: str) -> tuple[int, int, int] | None:
    """
    What tells a rules file changed (inode, size, modification time), or
    ``None`` when it is missing.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load_rules(path: str, need_reason: bool) -> RuleSet:
    """
    Read and parse a rules file.  Blocking, but small: read where it is
    needed.

    :raises RulesError: when it is unreadable, too large or has bad rules.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RULES_BYTES + 1)
    except OSError as e:
        raise RulesError(f"cannot read rules file {path}: {e.strerror}") from e
    if len(raw) > MAX_RULES_BYTES:
        raise RulesError(f"rules file {path} is over {MAX_RULES_BYTES} bytes; it is refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RulesError(f"rules file {path} is not UTF-8 (byte {e.start})") from e
    return parse_rules(text, path, need_reason)
