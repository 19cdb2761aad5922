"""
Settings: option parsing, TOML, validation, and the twistd plugin.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.config.defaultindex import DefaultIndex
from proxypypi.config.settings import build_config
from proxypypi.config.urls import ConfigError, parse_upstream_url
from proxypypi.service.tap import Options
from tests.support.clients import ROOT, twistd


class UpstreamURLTests(SynchronousTestCase):
    def test_trailing_slash_added(self) -> None:
        """A base URL without its trailing slash gets one."""
        self.assertEqual(
            parse_upstream_url("https://mirror.example/simple"), "https://mirror.example/simple/"
        )

    def test_not_http_refused(self) -> None:
        """Other schemes, relative and malformed URLs are refused with the URL named."""
        for bad in (
            "ftp://mirror.example/simple/",
            "mirror.example/simple/",
            "http://mirror.example:99999/",
            "http:///simple/",
        ):
            with self.assertRaises(ConfigError) as e:
                parse_upstream_url(bad)
            self.assertIn(bad, str(e.exception))


class BuildConfigTests(SynchronousTestCase):
    def test_groups_and_rank(self) -> None:
        """Each upstream value is a group in rank order; commas join mirrors."""
        config = build_config(
            {}, ["https://a.example/simple/,https://b.example/simple/", "https://c.example/simple/"]
        )
        self.assertEqual(
            [[u.url for u in g] for g in config.upstreams],
            [
                ["https://a.example/simple/", "https://b.example/simple/"],
                ["https://c.example/simple/"],
            ],
        )

    def test_command_line_overrides_file(self) -> None:
        """Upstreams given on the command line replace those of the file."""
        config = build_config(
            {"upstream": ["https://file.example/simple/"], "page-ttl": 5},
            ["https://cli.example/simple/"],
        )
        self.assertEqual(config.upstreams[0][0].url, "https://cli.example/simple/")
        self.assertEqual(config.page_ttl, 5.0)

    def test_no_upstream(self) -> None:
        """Without an upstream the error says how to give one."""
        with self.assertRaises(ConfigError) as e:
            build_config({})
        self.assertIn("--upstream", str(e.exception))

    def test_unknown_and_bad_values(self) -> None:
        """Unknown keys and unparsable values are named."""
        with self.assertRaises(ConfigError) as e:
            build_config({"upstream": "https://a.example/simple/", "colour": "red"})
        self.assertIn("colour", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            build_config({"upstream": "https://a.example/simple/", "page-ttl": "soon"})
        self.assertIn("page-ttl", str(e.exception))
        with self.assertRaises(ConfigError):
            build_config({"upstream": "https://a.example/simple/", "page-ttl": -1})


class OptionsTests(SynchronousTestCase):
    def test_options(self) -> None:
        """The options build a Config and create the storage directory."""
        storage = self.mktemp()
        options = Options()
        options.parseOptions(
            [
                "--upstream",
                "https://a.example/simple/",
                "--upstream",
                "https://b.example/simple",
                "--storage",
                storage,
                "--page-ttl",
                "30",
                "--listen",
                "tcp:0",
            ]
        )
        config = options["config_obj"]
        self.assertEqual(len(config.upstreams), 2)
        self.assertEqual(config.page_ttl, 30.0)
        self.assertEqual(config.listen, ("tcp:0",))
        self.assertTrue(os.path.isdir(os.path.join(storage, "tmp")))

    def test_toml_file(self) -> None:
        """--config reads the same keys from TOML."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f'upstream = ["https://a.example/simple/"]\nstorage = "{self.mktemp()}"\n')
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(options["config_obj"].upstreams[0][0].url, "https://a.example/simple/")

    def test_errors_are_one_line(self) -> None:
        """Bad values and unwritable storage end the process with one line, reason first."""
        with self.assertRaises(SystemExit) as e:
            Options().parseOptions(["--upstream", "ftp://a.example/", "--storage", self.mktemp()])
        self.assertTrue(str(e.exception).startswith("proxypypi: upstream URL 'ftp://a.example/'"))
        self.assertIn("--help", str(e.exception))
        self.assertNotIn("\n", str(e.exception))
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        with self.assertRaises(SystemExit) as e:
            Options().parseOptions(
                [
                    "--upstream",
                    "https://a.example/simple/",
                    "--storage",
                    os.path.join(blocker, "data"),
                ]
            )
        self.assertIn("--storage", str(e.exception))


class PluginTests(SynchronousTestCase):
    def test_twistd_lists_plugin(self) -> None:
        """`twistd --help` lists the proxypypi plugin."""
        self.assertIn("proxypypi", twistd("--help").stdout)

    def test_version(self) -> None:
        """`twistd proxypypi --version` names proxypypi's version."""
        from proxypypi import __version__

        result = twistd("proxypypi", "--version")
        self.assertEqual(result.returncode, 0)
        self.assertIn(f"proxypypi {__version__}", result.stdout)

    def test_twistd_configuration_error_is_one_line(self) -> None:
        """
        `twistd proxypypi` with a bad setting exits non-zero with the reason
        and a pointer to --help, not twistd's usage.
        """
        result = twistd("proxypypi", "--storage", self.mktemp(), "--page-ttl", "soon")
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr.splitlines(),
            ["proxypypi: page-ttl has a bad value 'soon': could not convert string to float: "
             "'soon' (see twistd proxypypi --help)"],
        )  # fmt: skip


class SettingsTests(SynchronousTestCase):
    def test_every_option_reaches_config(self) -> None:
        """Each option and flag lands in the Config, sizes parsed."""
        options = Options()
        options.parseOptions(
            [
                "--upstream", "https://a.example/simple/", "--storage", self.mktemp(),
                "--negative-ttl", "5", "--max-cache-size", "50G", "--max-upload-size", "10M",
                "--offline", "--forget-removed", "--allow-overwrite",
                "--log-format", "json", "--merge-upstream", "shared",
                "--trusted-proxy", "127.0.0.1", "--page-memory", "512M",
            ]
        )  # fmt: skip
        c = options["config_obj"]
        self.assertEqual(c.negative_ttl, 5.0)
        self.assertEqual(c.page_memory, 512 * 1024**2)
        self.assertEqual(c.max_cache_size, 50 * 1024**3)
        self.assertEqual(c.max_upload_size, 10 * 1024**2)
        self.assertTrue(c.offline and c.forget_removed and c.allow_overwrite)
        self.assertEqual((c.log_format, c.merge_upstream), ("json", ("shared",)))
        self.assertEqual(c.trusted_proxies, ("127.0.0.1",))

    def test_bad_sizes_and_formats(self) -> None:
        """Unparsable sizes and unknown log formats are named."""
        for args in (
            ["--max-cache-size", "lots"],
            ["--log-format", "xml"],
            ["--page-memory", "0"],
        ):
            with self.assertRaises(SystemExit) as e:
                Options().parseOptions(["--upstream", "https://a.example/simple/", *args])
            self.assertTrue(args[0].lstrip("-") in str(e.exception) or "log" in str(e.exception))


class ExampleConfigTests(SynchronousTestCase):
    def test_example_config_loads(self) -> None:
        """contrib/proxypypi.toml, with every documented key, is a valid config."""
        from proxypypi.config.settings import load_toml

        config = build_config(
            load_toml(os.path.join(ROOT, "contrib", "proxypypi.toml")),
            default_index=lambda listen: DefaultIndex("https://found.example/simple/", "found"),
        )
        self.assertEqual(config.upstreams[0][0].url, "https://found.example/simple/")
        self.assertEqual(config.max_upload_size, 1024**3)
