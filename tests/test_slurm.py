"""A plan on a real scheduler: a single-node Slurm cluster on this machine (munged,
slurmctld and slurmd from Debian's packages, with a configuration written here),
a 4-cell plan submitted as a job array, its records gathered into one report,
and every daemon stopped again.

Debian's slurm-wlm and munge are installed where missing (.ci/run does the same);
the test skips, naming the package, only where that cannot be done.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from bench.nightly.cells import load_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
TOOLS = {"sbatch": "slurm-wlm", "squeue": "slurm-wlm", "scancel": "slurm-wlm", "scontrol": "slurm-wlm",
         "sinfo": "slurm-wlm",
         "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "munged": "munge", "mungekey": "munge"}
# what a Slurm cluster runs: none of these may be left behind by this test
DAEMON_NAMES = ("munged", "slurmctld", "slurmd", "slurmstepd", "slurmscriptd")
CELLS = ["exits-sequential-v1", "exits-sequential-v2", "none-sequential-v1", "none-sequential-v2"]
PLAN_FLAGS = ["--vcpus", "1,2", "--mech", "exits,none", "--mem-per-vcpu", "2", "--repeat", "2",
              "--no-trace-locks", "--no-fingerprint"]
READY_S, JOBS_S, STOP_S = 60, 240, 20


def _tools() -> dict:
    return {name: shutil.which(name, path=SBIN_PATH) for name in TOOLS}


def _install_if_missing() -> dict:
    tools = _tools()
    if all(tools.values()):
        return tools
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, env=env)
            subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq",
                            "--no-install-recommends", "slurm-wlm", "munge"],
                           capture_output=True, timeout=900, env=env)
        except (subprocess.TimeoutExpired, OSError) as exc:
            pytest.skip(f"Debian packages slurm-wlm, munge could not be installed: {exc}")
        tools = _tools()
    missing = sorted({TOOLS[name] for name, path in tools.items() if not path})
    if missing:
        pytest.skip(f"Debian package(s) {', '.join(missing)} not installed and could not be installed")
    return tools


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon_pids() -> set[int]:
    """Processes that are parts of a Slurm or MUNGE installation, by command name."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if comm in DAEMON_NAMES:
                pids.add(int(entry))
    return pids


class Cluster:
    """munged, slurmctld and slurmd in the foreground, as this test's child processes,
    each in its own session; their files under `work` (the munge socket under
    `socket_dir`, which munged wants reachable by every user)."""

    def __init__(self, tools: dict, work, socket_dir: str):
        self.tools, self.work, self.socket_dir = tools, work, socket_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.conf = str(work / "slurm.conf")
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self.node = None

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.work / f"{name}.out", "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)   # its own group: stopped whole
        log.close()
        self.procs.append((name, proc))

    def logs(self) -> str:
        out = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log"):
            path = self.work / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(out)

    def start(self) -> None:
        key = self.work / "munge.key"
        subprocess.run([self.tools["mungekey"], "--create", f"--keyfile={key}"], check=True,
                       capture_output=True, timeout=30)
        sock = os.path.join(self.socket_dir, "munge.socket")
        self._start("munged", [self.tools["munged"], "--foreground", f"--key-file={key}",
                               f"--socket={sock}", f"--pid-file={self.socket_dir}/munged.pid",
                               f"--seed-file={self.work / 'munge.seed'}"])
        _wait(lambda: os.path.exists(sock), 20, "munged's socket", self)
        # the node as slurmd itself sees it: name, CPUs, sockets, cores, real memory
        node = subprocess.run([self.tools["slurmd"], "-C"], capture_output=True, text=True,
                              timeout=30, check=True).stdout.splitlines()[0]
        self.node = re.match(r"NodeName=(\S+)", node).group(1)
        for d in ("state", "spool"):
            (self.work / d).mkdir()
        w = self.work
        (w / "slurm.conf").write_text("\n".join([
            "ClusterName=faultbench-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={w / 'state'}", f"SlurmdSpoolDir={w / 'spool'}",
            f"SlurmctldPidFile={w / 'slurmctld.pid'}", f"SlurmdPidFile={w / 'slurmd.pid'}",
            f"SlurmctldLogFile={w / 'slurmctld.log'}", f"SlurmdLogFile={w / 'slurmd.log'}",
            # no cgroups: processes tracked by parentage, no task binding; cores are the
            # consumable resource, so two 1-CPU tasks would share this node but for the
            # plan's --exclusive (without it they overlap and the host lock refuses one)
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "ReturnToService=2",
            "MpiDefault=none", "SwitchType=switch/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "MailProg=/bin/true",
            f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP", ""]))
        (w / "cgroup.conf").write_text("# nothing in this cluster uses cgroups (proctrack/linuxproc, "
                                       "task/none)\nCgroupPlugin=autodetect\n")
        self._start("slurmctld", [self.tools["slurmctld"], "-D", "-i", "-f", self.conf])
        self._start("slurmd", [self.tools["slurmd"], "-D", "-f", self.conf])
        _wait(lambda: self.node_state() == "idle", READY_S, "the node to be idle", self)

    def node_state(self) -> str:
        done = subprocess.run([self.tools["sinfo"], "-h", "-n", self.node, "-o", "%T"],
                              capture_output=True, text=True, env=self.env, timeout=30)
        return done.stdout.strip()

    def cancel_jobs(self) -> None:
        """Cancel every job and wait (bounded) for the queue to empty: a job's steps
        run in their own sessions (slurmd setsid()s slurmstepd), which stopping the
        daemons' groups does not reach."""
        try:
            subprocess.run([self.tools["scancel"], "--user", "root"], capture_output=True,
                           env=self.env, timeout=30)
            deadline = time.monotonic() + STOP_S
            while time.monotonic() < deadline:
                queue = subprocess.run([self.tools["squeue"], "-h"], capture_output=True, text=True,
                                       env=self.env, timeout=30)
                if queue.returncode != 0 or not queue.stdout.strip():
                    return
                time.sleep(0.5)
        except (subprocess.TimeoutExpired, OSError):
            pass

    def stop(self) -> None:
        """SIGTERM to each daemon's group, last started first; SIGKILL what is left.
        One daemon that will not die does not keep the others running."""
        for name, proc in reversed(self.procs):
            try:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_S)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=STOP_S)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for _name, proc in self.procs:   # the groups themselves: helpers (slurmscriptd) too
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                continue
            os.killpg(proc.pid, signal.SIGKILL)


def _wait(ready, seconds: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds} s\n{cluster.logs()}")
        time.sleep(0.5)


def _array_tasks(cluster: Cluster, job: str) -> list[dict]:
    text = subprocess.run([cluster.tools["scontrol"], "show", "job", job], capture_output=True,
                          text=True, env=cluster.env, timeout=30).stdout
    tasks = []
    for block in text.strip().split("\n\n"):
        fields = dict(re.findall(r"(\w+)=(\S*)", block))
        if "ArrayTaskId" in fields:
            tasks.append(fields)
    return tasks


@pytest.fixture
def cluster(kvm, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm cluster runs its daemons as root")
    before = _daemon_pids()   # before the install: a package's own daemons are ours to stop
    tools = _install_if_missing()
    work = tmp_path / "slurm"
    work.mkdir()
    socket_dir = tempfile.mkdtemp(prefix="faultbench-munge-")
    os.chmod(socket_dir, 0o755)
    c = Cluster(tools, work, socket_dir)
    try:
        c.start()
        yield c
    finally:
        c.cancel_jobs()
        c.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
        # every daemon this test started is gone, and none of theirs was left behind:
        # what is still there after the wait is killed, and the test fails naming it
        deadline = time.monotonic() + STOP_S
        while _daemon_pids() - before and time.monotonic() < deadline:
            time.sleep(0.2)
        left = sorted(_daemon_pids() - before)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not left, f"Slurm/MUNGE processes left running (now killed): {left}"
        assert all(proc.poll() is not None for _n, proc in c.procs)


def test_a_plan_runs_as_a_slurm_job_array_and_gathers_into_one_report(cluster, tmp_path):
    started = time.monotonic()
    out = tmp_path / "gathered"
    script = tmp_path / "plan.sbatch"
    r = subprocess.run([sys.executable, "run_bench.py", "plan", *PLAN_FLAGS, "--format", "slurm",
                        "--out-dir", str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    script.write_text(r.stdout)
    assert "#SBATCH --array=0-3" in r.stdout and "#SBATCH --exclusive" in r.stdout
    submit_dir = tmp_path / "submit"
    submit_dir.mkdir()
    # --time bounds each task, so a stuck one cannot outlive the test's wait by much
    done = subprocess.run([cluster.tools["sbatch"], "--parsable", "--time=5", f"--chdir={submit_dir}", str(script)],
                          capture_output=True, text=True, env=cluster.env, timeout=60)
    assert done.returncode == 0, done.stderr + cluster.logs()
    job = done.stdout.strip().split(";")[0]

    def finished():
        tasks = _array_tasks(cluster, job)
        return len(tasks) == 4 and all(t["JobState"] not in ("PENDING", "RUNNING", "CONFIGURING",
                                                             "COMPLETING") for t in tasks)
    _wait(finished, JOBS_S, f"end of job array {job}", cluster)
    tasks = sorted(_array_tasks(cluster, job), key=lambda t: int(t["ArrayTaskId"]))
    logs = {i: (out / "logs" / f"{i}.out").read_text() if (out / "logs" / f"{i}.out").exists() else None
            for i in CELLS}
    assert [(t["JobState"], t["ExitCode"]) for t in tasks] == [("COMPLETED", "0:0")] * 4, \
        json.dumps(logs, indent=1) + cluster.logs()
    # each task's output is named by its job id; Slurm's own file says which task ran which
    assert all(text is not None for text in logs.values()), logs
    for t in tasks:
        said = (submit_dir / f"faultbench-{job}_{t['ArrayTaskId']}.out").read_text()
        # $(hostname) may be the long name of slurmd's short one, or the reverse
        assert f"job {CELLS[int(t['ArrayTaskId'])]} on {cluster.node.split('.')[0]}" in said, said
    # gathered: one record per cell, every cell of the plan, in one directory
    records = load_records([str(out)])
    assert sorted(os.path.relpath(p, out) for p, _r in records) == sorted(f"{i}/{i}.json" for i in CELLS)
    assert all(len(rec["runs"]) == 2 for _p, rec in records)
    r = subprocess.run([sys.executable, "run_bench.py", "report", str(out), "--out", str(tmp_path / "report")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "report" / "manifest.json").read_text())
    assert sorted(manifest["series"]) == ["exits", "none"] and manifest["vcpus"] == [1, 2]
    assert sorted(manifest["records"]) == sorted(f"{i}.json" for i in CELLS)
    assert manifest["hosts"] == [records[0][1]["machine"]["hostname"]]
    took = time.monotonic() - started
    print(f"slurm job array {job}: 4 cells submitted, run and reported in {took:.0f} s")
    assert took < 300, f"the job array took {took:.0f} s, over the 5 minutes this test may take"
