#!/usr/bin/env python3
"""faultbench entry point: `python run_bench.py --vcpus 256 --mech exits`."""
import sys

from bench.cli import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("run_bench.py: interrupted; no result written for the unfinished point", file=sys.stderr)
        sys.exit(130)
