"""
``proxypypi-admin``: housekeeping for a proxypypi storage directory, a plain
command-line program independent of twistd and of the reactor
(`proxypypi.ops.admin.cli`).
"""
