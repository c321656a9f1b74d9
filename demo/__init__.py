"""Demo-only pieces for ``gatepass serve --demo``: a built-in target machine, so no other host is needed.

Nothing here belongs in a production deployment: :class:`demo.target.DemoTarget` hands out a local
``/bin/sh`` on the broker's own machine (loopback only) to whoever holds its one configured credential.
"""
