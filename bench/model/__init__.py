"""A discrete-event scaling model of the fault-delivery mechanisms (see docs/MODEL.md).

The report's entry points (bench/model/report.py):
    report_data(calibration, pcpus=256, vcpus=..., mechs=..., mmu=None) -> rows
    claims(rows) -> the seed thread's three claims answered from those rows
    committed_predictions(mmu) -> the committed P = 256 rows
    provenance(calibration) -> a caption line
"""

_REPORT_NAMES = ("claims", "committed_predictions", "provenance", "report_data")


def __getattr__(name):
    if name in _REPORT_NAMES:
        # deferred: `calibrate` (numpy only) does not load SimPy through the package
        from . import report
        return getattr(report, name)
    raise AttributeError(name)
