"""Every command line in README.md and docs/*.md is parsed by the real parser of
the command it names, so a flag that changes breaks a test; the README's first
command runs for real."""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from bench import options
from bench.cmdline import OneLineParser, UsageError
from bench.commands import dispatch
from bench.subcommands import SUBCOMMANDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
ENTRY = re.compile(r"^(?:python3? )?(?:\./)?run_bench\.py(?: |$)|^python3? -m bench(?: |$)")
README_MAX_LINES = 150


def command_lines(text: str) -> list[str]:
    """The run_bench.py commands in a page's fenced code blocks (not ```text ones),
    continuation lines joined, `a && b` split."""
    out, block, lang = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)", line)
        if fence:
            if block is None:
                block, lang = [], fence.group(1)
            else:
                if lang not in ("text", "json"):
                    out += _commands(block)
                block = None
            continue
        if block is not None:
            block.append(line)
    return out


def _commands(lines: list[str]) -> list[str]:
    joined, cur = [], ""
    for line in lines:
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        joined.append(" ".join(cur.split()))
        cur = ""
    cmds = []
    for line in joined:
        for part in line.split("&&"):
            part = part.strip()
            if ENTRY.match(part):
                cmds.append(part)
    return cmds


class _Parsed(Exception):
    pass


def check_command(line: str, monkeypatch) -> None:
    """Parse one documented command with its own parser; raises UsageError (or
    ValueError from a workload's check) when the words are not valid."""
    words = shlex.split(line, comments=True)
    argv = words[words.index("bench") + 1:] if "-m" in words[:2] else \
        words[[i for i, w in enumerate(words) if w.endswith("run_bench.py")][0] + 1:]
    if "--help" in argv or "-h" in argv:   # argparse prints the help and exits 0
        with pytest.raises(SystemExit) as done:
            options.build_parser().parse_args(argv) if argv[0] not in SUBCOMMANDS else dispatch(argv)
        assert done.value.code == 0
    elif argv and argv[0] in SUBCOMMANDS:
        real = OneLineParser.parse_args

        def parse_only(self, args=None, namespace=None):
            raise _Parsed(real(self, args, namespace))
        with monkeypatch.context() as m:
            m.setattr(OneLineParser, "raising", True)
            m.setattr(OneLineParser, "parse_args", parse_only)
            with pytest.raises(_Parsed) as parsed:
                dispatch(argv)
        if argv[0] == "ab":   # its two configurations are benchmark words themselves
            for config in (parsed.value.args[0].config_a, parsed.value.args[0].config_b):
                options.parse_point(shlex.split(config))
        if argv[0] == "plan":   # its sweep flags are the benchmark's, checked as it checks them
            options.validate_args(parsed.value.args[0])
    else:
        options.parse_point(argv)


def _documented():
    found = []
    for page in PAGES:
        with open(page) as f:
            found += [(os.path.relpath(page, REPO), c) for c in command_lines(f.read())]
    return found


DOCUMENTED = _documented()


def test_pages_show_commands():
    pages = {p for p, _c in DOCUMENTED}
    assert "README.md" in pages and len(pages) >= 4, pages
    assert len(DOCUMENTED) >= 15, DOCUMENTED


@pytest.mark.parametrize("page,line", DOCUMENTED, ids=[f"{p}:{c[:60]}" for p, c in DOCUMENTED])
def test_documented_command_parses(page, line, monkeypatch):
    check_command(line, monkeypatch)


def test_readme_is_a_newcomers_page():
    with open(os.path.join(REPO, "README.md")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES
    # the two set-up lines first: install and run a benchmark; install and test
    setup = command_lines("\n".join(lines[:8]))
    assert setup and setup[0].endswith("run_bench.py --vcpus 8 --mech uffd,exits"), setup
    assert "python3 -m pip install -e '.[test]' && python3 -m pytest -q" in "\n".join(lines[:8])


# --- the checker catches what it is for -------------------------------------------

@pytest.mark.parametrize("bad", [
    "python3 run_bench.py --vcpus 8 --mech uffd --threshold 5",       # a flag that is gone
    "python3 run_bench.py --vcpus 0 --mech exits",                      # out of range
    "python3 run_bench.py --mech no-such-mechanism",
    "python3 run_bench.py compare BASE NEW --threshold 0.1",            # a subcommand's flag
    "python3 run_bench.py report",                                      # a missing argument
    'python3 run_bench.py ab "--mech exits" "--mech exits --bogus 1"',   # inside ab's configs
    "python3 run_bench.py plan --vcpus 0 --mech exits --format slurm",  # plan's sweep flags
    "python3 run_bench.py plan --vcpus 1 --format yaml",
])
def test_a_stale_command_fails(bad, monkeypatch):
    page = f"text\n```\n{bad}\n```\n"
    [line] = command_lines(page)
    with pytest.raises((UsageError, ValueError)):
        check_command(line, monkeypatch)


def test_text_blocks_and_continuations():
    page = ("```text\nrun_bench.py --no-such-flag\n```\n"
            "```\npython3 run_bench.py --vcpus 1 \\\n    --mech exits\n```\n")
    assert command_lines(page) == ["python3 run_bench.py --vcpus 1 --mech exits"]


# --- the README's first command, for real ------------------------------------------

def test_readme_first_command_runs_without_warning_about_itself(kvm, tmp_path):
    """On a quiet host it prints no warning about its own configuration; any
    other warning names what it is about (host or measurement)."""
    with open(os.path.join(REPO, "README.md")) as f:
        first = command_lines(f.read())[0]
    argv = shlex.split(first)[2:] + ["--results-dir", str(tmp_path)]
    p = subprocess.run([sys.executable, "run_bench.py", *argv], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    warnings = [line.strip() for line in p.stdout.splitlines() if line.strip().startswith("warning")]
    assert not [w for w in warnings if w.startswith("warning (configuration)")], warnings
    assert all(re.match(r"warning \((host|measurement)\): ", w) for w in warnings), warnings
    assert len(glob.glob(str(tmp_path / "*.json"))) == 2
