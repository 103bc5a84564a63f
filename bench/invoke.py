"""Run the benchmark as its own invocation, as from a shell (ab's blocks, the
nightly sweep, test fixtures)."""
import subprocess
import sys


def run_benchmark(argv: list[str]) -> tuple[int, str]:
    """Run the benchmark as its own invocation (its own host lock, fingerprint and
    clean-up, as from a shell): (exit status, what it printed on stdout). Its
    stderr goes to ours, so its one-line errors reach the user."""
    done = subprocess.run([sys.executable, "-m", "bench", *argv], stdout=subprocess.PIPE, text=True)
    return done.returncode, done.stdout
