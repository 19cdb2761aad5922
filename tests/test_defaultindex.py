"""
The upstream used when none is given: the index pip and uv use here.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.config.defaultindex import (
    find_default_index,
    pip_config_files,
    pip_default_index,
)
from proxypypi.config.settings import build_config
from proxypypi.config.urls import ConfigError

LISTEN = ("tcp:3141:interface=127.0.0.1",)


def _no_pip() -> None:
    return None


class DefaultIndexTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = self.mktemp()
        self.prefix = self.mktemp()
        self.etc = self.mktemp()
        for d in (self.home, self.prefix, self.etc):
            os.makedirs(d)
        #: A machine whose pip configuration is all under the test's control.
        self.env = {"HOME": self.home, "XDG_CONFIG_DIRS": self.etc}

    def find(self, env: dict[str, str] | None = None, **kwargs: object) -> tuple[str, str]:
        found = find_default_index(
            {**self.env, **(env or {})},
            kwargs.pop("listen", LISTEN),  # type: ignore[arg-type]
            prefix=self.prefix,
            pip_default=kwargs.pop("pip_default", lambda: "https://default.example/simple"),  # type: ignore[arg-type]
        )
        return found.url, found.reason

    def write_conf(self, path: str, text: str) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_environment_first(self) -> None:
        """PIP_INDEX_URL wins over uv's variables, which win over pip's files."""
        self.write_conf(os.path.join(self.prefix, "pip.conf"),
                        "[global]\nindex-url = https://file.example/simple/\n")  # fmt: skip
        env = {"PIP_INDEX_URL": "https://pip.example/simple",
               "UV_DEFAULT_INDEX": "https://uv.example/simple/",
               "UV_INDEX_URL": "https://uv-old.example/simple/"}  # fmt: skip
        url, reason = self.find(env)
        self.assertEqual(url, "https://pip.example/simple/")
        self.assertIn("PIP_INDEX_URL in the environment", reason)
        del env["PIP_INDEX_URL"]
        self.assertEqual(self.find(env)[0], "https://uv.example/simple/")
        del env["UV_DEFAULT_INDEX"]
        self.assertEqual(self.find(env)[0], "https://uv-old.example/simple/")
        del env["UV_INDEX_URL"]
        url, reason = self.find(env)
        self.assertEqual(url, "https://file.example/simple/")
        self.assertIn(os.path.join(self.prefix, "pip.conf"), reason)

    def test_pip_files_in_pips_order(self) -> None:
        """
        The environment's file overrides the user's, which overrides the
        global one; [install] counts over [global].
        """
        system = os.path.join(self.etc, "pip", "pip.conf")
        self.write_conf(system, "[global]\nindex-url = https://system.example/simple/\n")
        self.assertEqual(self.find()[0], "https://system.example/simple/")
        self.write_conf(os.path.join(self.home, ".config", "pip", "pip.conf"),
                        "[global]\nindex-url = https://g.example/simple/\n"
                        "[install]\nindex-url = https://user.example/simple/\n")  # fmt: skip
        self.assertEqual(self.find()[0], "https://user.example/simple/")
        self.write_conf(os.path.join(self.prefix, "pip.conf"),
                        "[global]\nindex_url = https://venv.example/simple/\n")  # fmt: skip
        self.assertEqual(self.find()[0], "https://venv.example/simple/")
        self.assertIn(system, pip_config_files(self.env, self.prefix))

    def test_pip_config_file_variable(self) -> None:
        """PIP_CONFIG_FILE is read last and hides the user's files; os.devnull hides all."""
        self.write_conf(os.path.join(self.home, ".pip", "pip.conf"),
                        "[global]\nindex-url = https://user.example/simple/\n")  # fmt: skip
        named = self.write_conf(os.path.join(self.mktemp(), "pip.conf"), "[global]\n")
        files = pip_config_files({**self.env, "PIP_CONFIG_FILE": named}, self.prefix)
        self.assertNotIn(os.path.join(self.home, ".pip", "pip.conf"), files)
        self.assertEqual(self.find({"PIP_CONFIG_FILE": named})[0], "https://default.example/simple/")
        self.assertEqual(self.find()[0], "https://user.example/simple/")
        self.assertEqual(self.find({"PIP_CONFIG_FILE": os.devnull})[0],
                         "https://default.example/simple/")  # fmt: skip

    def test_broken_files_ignored(self) -> None:
        """A file pip could not parse names nothing; the next one counts."""
        self.write_conf(os.path.join(self.prefix, "pip.conf"), "index-url = no section\n")
        self.write_conf(os.path.join(self.home, ".config", "pip", "pip.conf"), "\xff[global\n")
        self.assertEqual(self.find()[0], "https://default.example/simple/")

    def test_pip_default_last(self) -> None:
        """With nothing set, pip's own default, and the reason says so."""
        url, reason = self.find()
        self.assertEqual(url, "https://default.example/simple/")
        self.assertIn("pip's default index", reason)

    def test_self_and_file_indexes_skipped(self) -> None:
        """
        An index that is this proxy (pip already pointed here) or a file:
        index is passed over, and the reason says why.
        """
        env = {"PIP_INDEX_URL": "http://localhost:3141/simple/",
               "UV_DEFAULT_INDEX": "file:///srv/wheels/simple",
               "UV_INDEX_URL": "http://127.0.0.1:8080/simple/"}  # fmt: skip
        url, reason = self.find(env)
        self.assertEqual(url, "http://127.0.0.1:8080/simple/")
        self.assertIn("PIP_INDEX_URL in the environment (http://localhost:3141/simple/) is "
                      "this proxy itself", reason)  # fmt: skip
        self.assertIn("not an http(s) URL", reason)

    def test_no_pip(self) -> None:
        """Without a pip to ask, the error asks for --upstream."""
        with self.assertRaises(ConfigError) as e:
            self.find(pip_default=_no_pip)
        self.assertIn("--upstream", str(e.exception))

    def test_installed_pip_has_a_default(self) -> None:
        """The installed pip names its default index: an https simple index."""
        url = pip_default_index()
        assert url is not None
        self.assertTrue(url.startswith("https://"))
        self.assertTrue(url.rstrip("/").endswith("/simple"))

    def test_build_config_uses_it(self) -> None:
        """Only when no upstream is given; the reason is kept for the log."""
        config = build_config({}, default_index=lambda listen: find_default_index(
            {**self.env, "PIP_INDEX_URL": "https://pip.example/simple/"}, listen))  # fmt: skip
        self.assertEqual(config.upstreams[0][0].url, "https://pip.example/simple/")
        self.assertIn("PIP_INDEX_URL", config.upstream_reason or "")
        given = build_config({}, ["https://given.example/simple/"], default_index=_refuse)
        self.assertEqual(given.upstreams[0][0].url, "https://given.example/simple/")
        self.assertIsNone(given.upstream_reason)


def _refuse(listen: tuple[str, ...]) -> object:
    raise AssertionError("not asked when an upstream is given")
