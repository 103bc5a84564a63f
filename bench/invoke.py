"""Run the benchmark as its own invocation, as from a shell (ab's blocks, the
nightly sweep, run-job, test fixtures)."""
import collections
import signal
import subprocess
import sys
import threading

STDERR_KEPT_LINES = 200
# after our own Ctrl-C or SIGTERM: how long the child (which got the same signal
# from a terminal or a scheduler) may take to clean up before it is asked itself
CHILD_GRACE_S = 10.0


def run_benchmark(argv: list[str]) -> tuple[int, str]:
    """Run the benchmark as its own invocation (its own host lock, fingerprint and
    clean-up, as from a shell): (exit status, what it printed on stdout). Its
    stderr goes to ours, so its one-line errors reach the user."""
    done = subprocess.run([sys.executable, "-m", "bench", *argv], stdout=subprocess.PIPE, text=True)
    return done.returncode, done.stdout


def run_benchmark_teed(argv: list[str], cwd: str | None = None) -> tuple[int, str, str]:
    """As run_benchmark, in `cwd`, and also the last lines it printed on stderr
    (passed on to ours as they come, so a long job's log stays live): (exit
    status, stdout, stderr tail). Interrupted here, the child is waited for, so it
    cleans up as from a shell; then KeyboardInterrupt goes on up."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    tail: collections.deque = collections.deque(maxlen=STDERR_KEPT_LINES)

    def pump():
        for line in proc.stderr:
            tail.append(line)
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass   # our stderr is gone: keep draining, or the child blocks on a full pipe
    pump_thread = threading.Thread(target=pump, name="child-stderr", daemon=True)
    pump_thread.start()
    try:
        out = proc.stdout.read()
        proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(timeout=CHILD_GRACE_S)
        except subprocess.TimeoutExpired:   # the signal was ours alone: pass it on
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        pump_thread.join()
        raise
    pump_thread.join()
    return proc.returncode, out, "".join(tail)
