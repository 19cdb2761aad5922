"""
The service's settings: the immutable `proxypypi.config.model.Config`, how
it is read from options and TOML (`proxypypi.config.settings`), and the
URLs it holds (`proxypypi.config.urls`).
"""
