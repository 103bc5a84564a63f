#!/usr/bin/env python3
"""faultbench entry point: `python run_bench.py --vcpus 256 --mech exits`."""
import signal
import sys

from bench.cli import main


def _terminate(signum, frame):
    raise KeyboardInterrupt   # same clean-up path as Ctrl-C


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, _terminate)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("run_bench.py: interrupted; no result written for the unfinished point", file=sys.stderr)
        sys.exit(130)
