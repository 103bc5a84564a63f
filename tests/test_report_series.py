"""Series naming in reports: records that differ in configuration never merge."""
import copy
import os

from bench import table
from bench.reporting.data import ReportData

RECORDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "report", "example", "records")


def test_a_config_key_that_differs_at_one_vcpu_count_names_the_series():
    recs = table.load_records([RECORDS])
    others = [(p, r) for p, r in recs if r["config"]["mech"] != "exits"]
    variants = []
    for p, r in recs:
        if r["config"]["mech"] == "exits":
            for placement in ("packed", "spread"):   # e.g. a field a newer harness adds
                v = copy.deepcopy(r)
                v["config"]["placement"] = placement
                variants.append((f"{p}.{placement}", v))
    d = ReportData(table.build(others + variants))
    assert "exits placement=packed" in d.series and "exits placement=spread" in d.series
    # the vCPU-derived uffds of uffd-many and memory_pages do not split a series
    assert "uffd-many" in d.series and "uffd" in d.series
    colors = [d.colors[s] for s in d.series]
    assert len(set(colors)) == len(colors)
    n = len(d.cell_rows("exits placement=packed", 64))
    assert n == len([r for p, r in variants if p.endswith("packed")
                     and r["config"]["vcpus"] == 64][0]["runs"])
