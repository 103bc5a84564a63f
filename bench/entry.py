"""The process entry of run_bench.py and `python -m bench`."""
import signal
import sys

from .commands import dispatch


def _terminate(signum, frame):
    raise KeyboardInterrupt   # same clean-up path as Ctrl-C


def entry() -> None:
    """The process entry (run_bench.py, python -m bench): a subcommand, or a
    benchmark run; SIGTERM, SIGHUP and SIGQUIT clean up as Ctrl-C does."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, _terminate)
    argv = sys.argv[1:]
    try:
        status = dispatch(argv)
        if status is None:
            # deferred: only a benchmark run needs the C core; the record tools work without it
            from .cli import main
            status = main(argv)
        sys.exit(status)
    except KeyboardInterrupt:
        print("run_bench.py: interrupted; no result written for the unfinished point", file=sys.stderr)
        sys.exit(130)
