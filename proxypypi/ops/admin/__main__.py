"""
``python -m proxypypi.ops.admin``: the same as ``proxypypi-admin``.
"""

import sys

from proxypypi.ops.admin.cli import main

sys.exit(main())
