"""
``proxypypi-admin adduser``: bcrypt entries the service accepts, without
apache2-utils.
"""

from __future__ import annotations

import io
import os
import stat

import bcrypt
from twisted.trial.unittest import SynchronousTestCase

from proxypypi.ops.admin.cli import main
from proxypypi.ops.admin.users import read_password
from proxypypi.private.auth import check_auth_file, parse_htpasswd
from tests.support.auth import htpasswd_line


class Typed(io.StringIO):
    """Standard input that is a terminal."""

    def isatty(self) -> bool:
        return True


class AddUserTests(SynchronousTestCase):
    def run_admin(self, *argv: str, stdin: str = "s3cret\n") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(["adduser", *argv], out, err, io.StringIO(stdin))
        return code, out.getvalue(), err.getvalue()

    def test_new_file_from_stdin(self) -> None:
        """
        A missing file is created, readable by its owner only, with a
        ``$2y$`` bcrypt entry that checks and that the service accepts.
        """
        path = self.mktemp()
        code, out, _ = self.run_admin("alice", "--auth-file", path)
        self.assertEqual((code, out), (0, f"added alice in {path}\n"))
        with open(path, "rb") as f:
            entries, refused = parse_htpasswd(f.read())
        self.assertEqual((list(entries), refused), ([b"alice"], []))
        self.assertTrue(entries[b"alice"].startswith(b"$2y$12$"))
        self.assertTrue(bcrypt.checkpw(b"s3cret", entries[b"alice"]))
        self.assertFalse(bcrypt.checkpw(b"s3cret\n", entries[b"alice"]))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(check_auth_file(path), 1)

    def test_replace_keeps_the_rest(self) -> None:
        """Another user's entry, comments and the file's mode survive a password change."""
        path = self.mktemp()
        bob = htpasswd_line("bob", "pw")
        with open(path, "wb") as f:
            f.write(b"# users\n" + bob + htpasswd_line("alice", "old"))
        os.chmod(path, 0o640)
        code, out, _ = self.run_admin("alice", "--auth-file", path, stdin="new\n")
        self.assertEqual((code, out), (0, f"replaced alice in {path}\n"))
        with open(path, "rb") as f:
            data = f.read()
        entries, _ = parse_htpasswd(data)
        self.assertTrue(data.startswith(b"# users\n" + bob))
        self.assertTrue(bcrypt.checkpw(b"new", entries[b"alice"]))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640)
        self.assertEqual([n for n in os.listdir(os.path.dirname(path)) if "htpasswd" in n], [])

    def test_refusals(self) -> None:
        """Bad names and passwords are refused with one line; the file is untouched."""
        path = self.mktemp()
        for name, password, reason in (
            ("al:ice", "pw\n", "cannot be a user name"),
            ("al ice", "pw\n", "cannot be a user name"),
            ("alice", "\n", "the password is empty"),
            ("alice", "x" * 73 + "\n", "longer than bcrypt's 72 bytes"),
        ):
            code, _, err = self.run_admin(name, "--auth-file", path, stdin=password)
            self.assertEqual(code, 2)
            self.assertIn(reason, err)
            self.assertEqual(len(err.splitlines()), 1)
        self.assertFalse(os.path.exists(path))

    def test_terminal_asks_twice(self) -> None:
        """On a terminal the password is asked twice and must match."""
        answers = iter(["one", "one"])
        self.assertEqual(read_password(Typed(), lambda prompt: next(answers)), b"one")
        answers = iter(["one", "two"])
        with self.assertRaises(Exception) as e:
            read_password(Typed(), lambda prompt: next(answers))
        self.assertIn("differ", str(e.exception))
