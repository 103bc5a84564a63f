#!/usr/bin/env python3
"""faultbench entry point: `python run_bench.py --vcpus 256 --mech exits`."""
from bench.entry import entry

if __name__ == "__main__":
    entry()
