"""
Packaging for proxypypi.

``twisted.plugins`` is listed explicitly: it has no ``__init__.py`` (it must
not, or it would shadow Twisted's own), so ``find_packages`` never sees it.
"""

from setuptools import find_packages, setup

setup(
    name="proxypypi",
    version="0.1.0",
    description="A caching proxy for the Python package index, built on Twisted",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["proxypypi", "proxypypi.*"]) + ["twisted.plugins"],
    package_data={"proxypypi": ["py.typed"]},
    entry_points={
        "console_scripts": [
            "proxypypi = proxypypi.service.cli:main",
            "proxypypi-admin = proxypypi.ops.admin.cli:main",
        ]
    },
    install_requires=[
        "Twisted[tls]>=25.5.0",
        "treq>=23.11.0",
        "attrs>=23.1.0",
        "service-identity>=21.1.0",
        "packaging>=24.2",
        # htpasswd -B entries (uploads, --auth-read).
        "bcrypt>=4.1",
        # Incremental multipart parsing of uploads; treq needs it already.
        "multipart>=1.2",
        # JSON pages: 13x faster to write than the standard library (issue 12).
        "orjson>=3.10",
        # gzip forms of pages and the project list: 5x faster than zlib at a
        # better ratio (issue 12).
        "isal>=1.6",
        # /metrics in the Prometheus text format.
        "prometheus-client>=0.20",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "ruff>=0.5",
            "uv>=0.4",
            "twine>=5",
            # Property tests of the parsers of upstream and client input (issue 14).
            "hypothesis>=6.100",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Software Distribution",
    ],
)
