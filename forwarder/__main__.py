"""``python -m forwarder``: the same as the ``kmsg-forwarder`` command."""

import sys

from forwarder.cli import main

sys.exit(main())
