"""
proxypypi: a caching proxy for the Python package index, built on Twisted.
"""

__version__ = "0.1.0"
