"""The full report, regenerated from the committed example records and checked
against the committed example, output by output."""
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "report", "example")
RECORDS = os.path.join(EXAMPLE, "records")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = subprocess.run([sys.executable, "run_bench.py", "report", RECORDS, "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(out / "manifest.json") as f:
        return out, json.load(f)


def _committed_manifest():
    with open(os.path.join(EXAMPLE, "manifest.json")) as f:
        return json.load(f)


def test_matches_the_committed_example_in_structure(regenerated):
    out, new = regenerated
    old = _committed_manifest()
    for key in ("outputs", "figures", "series", "emulated", "vcpus", "reference", "cdf_vcpus",
                "records"):
        assert new[key] == old[key], key
    assert [(t["title"], t["columns"], t["rows"]) for t in new["tables"]] == \
        [(t["title"], t["columns"], t["rows"]) for t in old["tables"]]
    assert new["warnings"] == old["warnings"]
    for name in new["outputs"]:
        assert os.path.getsize(out / name) > 1000, name
        assert os.path.exists(os.path.join(EXAMPLE, name)), name
    # the committed text, Markdown and HTML (images aside) are what the code writes today
    # from the committed records; so the browser test can open the committed page
    for name in ("report.txt", "report.md", "report.html"):
        with open(out / name) as a, open(os.path.join(EXAMPLE, name)) as b:
            assert _without_images(a.read()) == _without_images(b.read()), name


def _without_images(text):
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "IMAGE", text)


def test_every_figure_as_png_and_svg_and_the_main_ones_present(regenerated):
    out, m = regenerated
    names = [f["name"] for f in m["figures"]]
    for required in ("rate", "fairness", "latency", f"latency_cdf_{m['vcpus'][-1]}",
                     "breakdown", "locks", "blocktime", "cpu_by_role"):
        assert required in names
    # the per-vCPU rate is the overall rate over N: fairness replaces it
    assert "rate_per_vcpu" not in names
    for n in names:
        png, svg = out / "figures" / f"{n}.png", out / "figures" / f"{n}.svg"
        with open(png, "rb") as f:
            head = f.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width >= 1500 and abs(width / height - 16 / 9) < 0.05   # a 16:9 slide
        text = svg.read_text()
        # no caption baked in (the page has it); emulation named in the legend
        assert "online CPUs" not in text and "MiB per vCPU" not in text
        if n not in ("locks",) and not n.startswith("latency_cdf"):
            assert "EMULATED" in text, n


def test_text_tables_fit_80_columns_and_name_units_and_emulation(regenerated):
    out, m = regenerated
    text = (out / "report.txt").read_text()
    long = [line for line in text.splitlines() if len(line) > 80]
    assert long == []
    titles = [t["title"] for t in m["tables"]]
    for t in titles:
        assert t in text
    assert sum(1 for t in titles if re.search(r"(pages/s|us|ms)\b", t)) >= 5
    # every row of async says so; the reason is given once, in the summary
    for line in text.splitlines():
        if re.match(r"async\b", line):
            assert line.startswith("async (EMULATED)"), line
    assert text.count("EMULATED async") == 1
    # the summary names the CPUs and the oversubscribed cells; the mail block comes first
    assert f"host has {m['cpus']} CPUs" in text
    assert text.index("Per-vcpu demand paging rate") < text.index("Summary\n=======")
    mail = text.split("\n\nSummary\n")[0]
    assert max(len(line) for line in mail.splitlines()) <= 72


def test_warnings_sit_next_to_their_cells(regenerated):
    out, m = regenerated
    text = (out / "report.txt").read_text()
    md = (out / "report.md").read_text()
    for wid, where in m["warnings"].items():
        assert re.search(rf"\b{wid}\b", text.split("Warnings carried")[0]), wid
        assert f"{wid}  {where}:" in text and f"**{wid}** {where}" in md


def test_html_is_self_contained(regenerated):
    out, m = regenerated
    html = (out / "report.html").read_text()
    assert html.count("<img") == len(m["figures"])
    assert "data:image/png;base64," in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "default-src 'none'" in html


def test_who_wins_relative_to_another_mechanism():
    from bench.reporting.data import ReportData
    from bench.reporting.tables import who_wins_table
    from bench.table import load_table
    d = ReportData(load_table([RECORDS]))
    t = who_wins_table(d, "uffd", {})
    assert t.title == "Who wins? Paging rate relative to uffd"
    assert "uffd" not in {row[0] for row in t.rows}   # the reference is not its own row
    for row in t.rows:
        lo, hi = (float(x) for x in row[3].split("-"))
        assert lo <= float(row[2]) <= hi
        assert row[4] in ("SAME", "DIFFERENT", "UNKNOWN") and row[5]


@pytest.mark.parametrize("args, message", [
    (["--relative-to", "nosuch"], "not among the series"),
    (["--cdf-vcpus", "3"], "no cell at that count"),
    (["--cdf-vcpus", "1,3"], "no cell at that count"),
])
def test_bad_report_options_one_line_exit_2(tmp_path, args, message):
    r = subprocess.run([sys.executable, "run_bench.py", "report", RECORDS, "--out", str(tmp_path),
                        *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_input_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "run_bench.py", "report", str(tmp_path / "nope"),
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "no such file" in r.stderr
