"""Bench-owned launcher for the gateway: ``python -m bench.launch_gateway gateway --host 127.0.0.1 ...``.

It only prepares the process and hands over to ``wcfrelay.cli.main``:

* raises the soft open-files limit to the hard one (the scale scenario holds 10,000+ sockets);
* ``WCFRELAY_UVLOOP=1`` installs uvloop's event loop policy first (the bench's switch for what ``--uvloop`` does);
* ``WCFRELAY_CPROFILE=FILE`` runs the gateway under cProfile and writes the stats to FILE when it stops
  (a fallback for machines where py-spy cannot attach).
"""

from __future__ import annotations

import os
import sys

from bench.common import install_uvloop, raise_nofile


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    raise_nofile()
    if os.environ.get("WCFRELAY_UVLOOP") == "1":
        if not install_uvloop():
            print("bench.launch_gateway: WCFRELAY_UVLOOP=1 but uvloop is not installed", file=sys.stderr)
            return 3
        print("bench.launch_gateway: running the gateway on uvloop", file=sys.stderr, flush=True)
    from wcfrelay.cli import main as cli_main

    profile_to = os.environ.get("WCFRELAY_CPROFILE")
    if not profile_to:
        return cli_main(argv)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(cli_main, argv)
    finally:
        profiler.dump_stats(profile_to)


if __name__ == "__main__":
    sys.exit(main())
