"""
Running the service: what it counts, how it logs, and the operator's
commands (``proxypypi-admin``).
"""
