"""The scaling model (docs/MODEL.md): its structure against textbook results
with hand-set parameters, the steady state against longer runs, the CLI, and
the validation: calibrated from one sweep, checked against a second one."""
import dataclasses
import functools
import json
import os
import random

import numpy as np
import pytest
import simpy

from bench.model import calibrate, crosscheck, params as paramsmod, predict, report, sim

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "model_data")   # not result records: kept out of tests/data
CAL_FILE = report.CALIBRATION_FILE
RATE_TOLERANCE = 0.25
P50_TOLERANCE = 0.35


def _rate(mech, vcpus, pcpus, p, mmu="shadow", faults=3000):
    stats, window = sim.simulate(mech, vcpus, pcpus, p, mmu=mmu, faults=faults)
    return stats.faults / window * 1e9, stats


# -- textbook results ---------------------------------------------------------

def test_one_server_with_poisson_arrivals_gives_the_mm1_mean_wait():
    """A SpinLock (the model's serialising element) fed Poisson arrivals with
    exponential holds, on more CPUs than ever wait: mean wait rho/(mu - lambda)."""
    env = simpy.Environment()
    stats = sim.Stats()
    stats.measuring = True
    cpus = sim.Cpus(env, 10_000, 4e6, stats)
    lock = sim.SpinLock(env, "server", stats)
    rng = random.Random(7)
    mean_service, lam = 1000.0, 0.7 / 1000.0      # ns; rho = 0.7
    waits = []

    def client(t):
        t0 = env.now
        yield from t.acquire()
        hold = rng.expovariate(1 / mean_service)
        yield from lock.hold(t, hold)
        waits.append(env.now - t0 - hold)
        t.release()

    def source():
        while len(waits) < 60_000:
            yield env.timeout(rng.expovariate(lam))
            env.process(client(sim.Thread(cpus, "client")))

    env.process(source())
    env.run()
    rho = lam * mean_service
    expected = rho / (1 / mean_service - lam)      # Wq of M/M/1
    measured = sum(waits[5000:]) / len(waits[5000:])
    print(f"M/M/1: mean wait {measured:.0f} ns, textbook {expected:.0f} ns")
    assert measured == pytest.approx(expected, rel=0.08)


@pytest.mark.parametrize("clients", [4, 32])
def test_a_lock_held_h_by_every_contender_gives_one_over_h(clients):
    """exits vCPUs that do nothing but take the shadow MMU's write lock for h."""
    h = 2000.0
    p = paramsmod.Params(mmu_hold_ns=h)
    rate, _ = _rate("exits", clients, 4 * clients, p, "shadow")
    print(f"{clients} contenders, hold {h:.0f} ns: {rate:.0f}/s, textbook {1e9 / h:.0f}/s")
    assert rate == pytest.approx(1e9 / h, rel=0.01)


@pytest.mark.parametrize("order", ["wakecredit", "fifo", "eevdf"])
@pytest.mark.parametrize("pcpus,vcpus", [(4, 4), (4, 12), (16, 64)])
def test_p_cpus_and_v_independent_clients_of_cost_c_give_p_over_c(pcpus, vcpus, order):
    """exits vCPUs of CPU cost c on a TDP MMU (nothing shared): P/c once V >= P,
    whatever the slice and the run queue's order."""
    c = 10_000.0
    p = paramsmod.Params(vcpu_pre_ns=c / 2, vcpu_post_ns=c / 2, quantum_ns=50_000.0,
                         run_queue_order=order)
    rate, _ = _rate("exits", vcpus, pcpus, p, "tdp")
    print(f"P={pcpus} V={vcpus} c={c:.0f} ns: {rate:.0f}/s, textbook {pcpus * 1e9 / c:.0f}/s")
    assert rate == pytest.approx(pcpus * 1e9 / c, rel=0.01)


def test_an_eevdf_queue_spreads_the_waits_a_fifo_queue_makes_equal():
    """The same hand-set uffd-many cell (64 vCPUs, a reader each, 2 CPUs) under both
    orders: the same rate and mean latency (the CPUs do the same work), but FIFO gives
    every fault one full cycle while the EEVDF-ordered queue (deadlines, lag kept
    across sleeps) serves some faults sooner and some later."""
    base = paramsmod.Params(vcpu_pre_ns=10_000, vcpu_post_ns=10_000, reader_msg_ns=8_000,
                            reader_wake_ns=2_000, quantum_ns=3e6, uffds=0)
    rows = {o: predict.simulate_row(dataclasses.replace(base, run_queue_order=o), "uffd-many", 64, 2,
                                    "shadow", None) for o in ("fifo", "eevdf")}
    fifo, eevdf = rows["fifo"], rows["eevdf"]
    print({o: (round(r["pages_per_s"]), r["fault_latency_ns"]) for o, r in rows.items()})
    assert eevdf["pages_per_s"] == pytest.approx(fifo["pages_per_s"], rel=0.02)
    assert eevdf["fault_latency_ns"]["mean"] == pytest.approx(fifo["fault_latency_ns"]["mean"], rel=0.02)
    assert fifo["fault_latency_ns"]["p99"] <= 1.01 * fifo["fault_latency_ns"]["p50"]
    assert eevdf["fault_latency_ns"]["p99"] > 1.3 * eevdf["fault_latency_ns"]["p50"]


def test_a_woken_sleeper_queues_one_slice_ahead_and_no_further():
    """The default order ("wakecredit"): a thread woken from a sleep (or asking for its
    first CPU) queues as if it had come one slice earlier; a thread that gave its CPU up
    without sleeping queues when it comes. On one CPU held until t = 300 with a slice of
    100: a slice-spender queued at 10 is passed by a sleeper woken at 60 (60 - 100 < 10)
    and a new thread at 80, not by a sleeper woken at 200. Under FIFO all go in arrival
    order."""
    def order_of(queue):
        env = simpy.Environment()
        cpus = sim.Cpus(env, 1, 100.0, sim.Stats(), order=queue)
        got = []

        def holder():
            t = sim.Thread(cpus, "holder")
            yield from t.acquire()
            yield env.timeout(300)
            t.release()

        def comer(name, at, slept, new=False):
            yield env.timeout(at)
            t = sim.Thread(cpus, name)
            t.started = not new          # a thread that has had a CPU before
            yield from t.acquire(woken=slept)
            got.append(name)
            t.release()
        env.process(holder())
        env.process(comer("slice-spender", 10, False))
        env.process(comer("woken at 60", 60, True))
        env.process(comer("new at 80", 80, False, new=True))   # queues as a woken one
        env.process(comer("woken at 200", 200, True))
        env.run()
        return got
    assert paramsmod.Params().run_queue_order == "wakecredit"
    assert order_of("wakecredit") == ["woken at 60", "new at 80", "slice-spender", "woken at 200"]
    assert order_of("fifo") == ["slice-spender", "woken at 60", "new at 80", "woken at 200"]


def test_the_wake_credit_moves_async_and_no_other_cell_at_p2(monkeypatch):
    """At P = 2 the credit matters only where a sleeper and a yielder share the queue:
    async (the resolver and the spinners). uffd-many, uffd and exits rates are FIFO's;
    async's resolver, woken by a vCPU that then yields, runs next instead of behind the
    yielded spinners, so it finds one fault a wake-up instead of a batch (the records:
    0.76 sleeps a fault at 16 vCPUs, sweeps 12-15; MODEL.md, Structure)."""
    cal = report.load_calibration(CAL_SEED13)
    rows = {q: {(r["mech"], r["vcpus"]): r for r in predict.predict(
        cal, ["uffd-many", "uffd", "exits"], [4, 16], 2, sensitivity=False, run_queue=q)}
        for q in ("fifo", "wakecredit")}
    for k, r in rows["fifo"].items():
        assert rows["wakecredit"][k]["pages_per_s"] == pytest.approx(r["pages_per_s"], rel=0.01), k
    sleeps = {}
    real_sleep_on = sim.Thread.sleep_on

    def counted(self, event):
        sleeps[self.role] = sleeps.get(self.role, 0) + 1
        return (yield from real_sleep_on(self, event))
    monkeypatch.setattr(sim.Thread, "sleep_on", counted)
    p = paramsmod.for_prediction(cal, "async", 2)
    per_fault = {}
    for q in ("fifo", "wakecredit"):
        sleeps.clear()
        stats, _ = sim.simulate("async", 16, 2, dataclasses.replace(p, run_queue_order=q), faults=4000)
        per_fault[q] = sleeps["resolver"] / (stats.faults * 1.25)    # warm-up: a quarter more
    print(per_fault)
    assert per_fault["fifo"] < 0.2 and per_fault["wakecredit"] > 0.5


def _shape_cell(mech, vcpus, runs):
    return {"mech": mech, "vcpus": vcpus, "readers": 1, "uffds": 0,
            "runs": [{"p50_ns": p50, "p99_ns": p99, "pages_per_s": rate} for p50, p99, rate in runs]}


def test_the_latency_shape_is_each_oversubscribed_cells_median_share_of_a_cycle():
    """p50 (p99) x rate / vCPUs, the median over a cell's runs, for cells with more
    threads than CPUs only; exits is not shaped; no such cell is a named missing."""
    cells = [_shape_cell("uffd-many", 1, [(90e3, 200e3, 1e4)]),            # 2 threads on 2 CPUs
             _shape_cell("uffd-many", 4, [(200e3, 400e3, 2e4), (100e3, 600e3, 2e4), (150e3, 500e3, 2e4)])]
    got = calibrate._latency_shape(cells, "uffd-many", 2)
    assert got["kind"] == "measured" and len(got["points"]) == 1
    pt = got["points"][0]
    # cycle 4 / 2e4 s = 200 us: shares 1.0, 0.5, 0.75 -> 0.75; p99 2, 3, 2.5 -> 2.5
    assert (pt["vcpus"], pt["threads_log2"], pt["runs"]) == (4, 2.0, 3)
    assert pt["p50_share"] == pytest.approx(0.75) and pt["p99_share"] == pytest.approx(2.5)
    assert calibrate._latency_shape(cells[:1], "uffd-many", 2)["kind"] == "missing"
    exits = calibrate._latency_shape([dict(cells[1], mech="exits")], "exits", 2)
    assert exits["value"] is None and "own vCPU's path" in exits["not_applied"]


def test_model_shapes_p50_and_p99_only_where_threads_outnumber_cpus():
    cal = report.load_calibration(CAL_SEED13)
    shape = cal["mechanisms"]["uffd-many"]["latency_shape"]["points"]
    rows = {(r["mech"], r["vcpus"]): r for r in predict.predict(
        cal, ["uffd-many", "exits"], [1, 4, 8], 2, sensitivity=False)}
    four = rows[("uffd-many", 4)]
    assert four["latency_shape"]["applied"] and "fault_latency_ns_simulated" in four
    cycle = 4 / four["pages_per_s"] * 1e9
    assert four["fault_latency_ns"]["p50"] == pytest.approx(shape[0]["p50_share"] * cycle)
    assert four["fault_latency_ns"]["p99"] == pytest.approx(shape[0]["p99_share"] * cycle)
    # 8 vCPUs (16 threads, log2 3) lies halfway between the calibrated 4 (2) and 16 (4)
    eight = rows[("uffd-many", 8)]["latency_shape"]
    assert eight["p50_share"] == pytest.approx((shape[0]["p50_share"] + shape[1]["p50_share"]) / 2)
    assert not rows[("uffd-many", 1)]["latency_shape"]["applied"]
    assert "every thread has a CPU" in rows[("uffd-many", 1)]["latency_shape"]["why"]
    assert not rows[("exits", 4)]["latency_shape"]["applied"]
    delayed = predict.predict(cal, ["uffd-many"], [4], 2, sensitivity=False, fetch_delay_us=50.0)[0]
    assert not delayed["latency_shape"]["applied"] and "fetch-delay" in delayed["latency_shape"]["why"]
    old = predict.predict(report.load_calibration(CAL_SEED4), ["uffd-many"], [4], 2, sensitivity=False)[0]
    assert not old["latency_shape"]["applied"] and "not in this calibration" in old["latency_shape"]["why"]
    assert "fault_latency_ns_simulated" not in old
    # on 256 CPUs, 257 threads is fewer a CPU than any calibrated cell: not carried there
    big = predict.predict(cal, ["uffd"], [256], 256, sensitivity=False)[0]["latency_shape"]
    assert not big["applied"] and "fewer threads a CPU" in big["why"]
    # uffd-many at 512 vCPUs on 256 CPUs (4 threads a CPU, the calibrated 4-vCPU cell's):
    # the 0.5x / 2x rows of the cited parameter are shaped too, each on its own cycle
    row = predict.predict(cal, ["uffd-many"], [512], 256, mmu="tdp")[0]
    assert row["latency_shape"]["applied"]
    for sens in row["cited_sensitivity"].values():
        assert sens["fault_latency_ns"]["p50"] == pytest.approx(
            shape[0]["p50_share"] * 512 / sens["pages_per_s"] * 1e9)


def test_a_chosen_run_queue_reaches_the_simulation_and_the_row_says_so(monkeypatch):
    seen = []
    real = predict.simulate_row

    def spy(p, mech, vcpus, pcpus, mmu, faults):
        seen.append(p.run_queue_order)
        return real(p, mech, vcpus, pcpus, mmu, 500)
    monkeypatch.setattr(predict, "simulate_row", spy)
    cal = report.load_calibration(CAL_SEED12)
    rows = predict.predict(cal, ["exits"], [4], 2, sensitivity=False, run_queue="eevdf")
    assert seen == ["eevdf"] and rows[0]["run_queue"] == "eevdf"
    rows = predict.predict(cal, ["exits"], [4], 2, sensitivity=False)
    assert seen[-1] == "wakecredit" and "run_queue" not in rows[0]
    with pytest.raises(ValueError, match="no run queue order 'EEVDF'"):
        predict.predict(cal, ["exits"], [4], 2, sensitivity=False, run_queue="EEVDF")


def test_an_eevdf_queue_places_a_parked_spinner_as_a_woken_thread():
    """An async vCPU parked off the queue (it yielded) comes back at the mean v less its
    lag, not at the v it left with: else it returns with the lag of its whole park."""
    env = simpy.Environment()
    cpus = sim.EevdfCpus(env, 1, 1000.0, sim.Stats())
    a, b = sim.Thread(cpus, "vcpu"), sim.Thread(cpus, "vcpu")

    def hog(t):
        yield from t.acquire()
        while True:
            yield from t.run(100.0)

    seen = {}

    def parked(t):
        yield from t.acquire()
        t.release()
        yield env.timeout(50_000)               # parked while the hog runs on
        seen["mean"] = cpus.mean_v()            # the hog's v alone
        yield from t.acquire(placed=True)
        seen["v"] = t.v
    env.process(hog(a))
    env.process(parked(b))
    env.run(until=60_000)
    assert seen["mean"] > 40_000
    assert abs(seen["v"] - seen["mean"]) <= 2 * 1000.0      # within the lag bound of the mean


@pytest.mark.parametrize("vcpus", [16, 64])
def test_async_spinners_outnumbering_cpus_leave_the_resolver_its_rate(vcpus):
    """async with 4-16 busy-waiting vCPUs a CPU: a spinner that yields is parked until
    its bit clears, so the one resolver (cost r a fault) gets a CPU when woken and
    keeps it while the list has work: 1/r, with every CPU busy and none over-counted."""
    r = 5000.0
    p = paramsmod.Params(reader_msg_ns=r, vcpu_pre_ns=1000.0, vcpu_post_ns=1000.0, yield_ns=500.0)
    rate, stats = _rate("async", vcpus, 4, p, "tdp")
    window = stats.faults / rate * 1e9
    cpu = sum(v for k, v in stats.busy.items() if k.startswith("cpu:")) / (4 * window)
    print(f"async V={vcpus} P=4 r={r:.0f} ns: {rate:.0f}/s, textbook {1e9 / r:.0f}/s, CPUs busy {cpu:.3f}")
    assert rate == pytest.approx(1e9 / r, rel=0.01)
    assert cpu == pytest.approx(1.0, abs=0.005)


def test_one_reader_serialises_every_vcpu_and_a_walk_grows_with_waiters():
    """uffd: with free CPUs the one reader is the limit, 1/(msg + walk of V waiters)."""
    p = paramsmod.Params(reader_msg_ns=1000.0, wake_per_waiter_ns=10.0)
    for vcpus in (8, 64):
        rate, _ = _rate("uffd", vcpus, 4 * vcpus, p)
        # waiters on the queue when the walk runs: every vCPU (they re-fault at once)
        expected = 1e9 / (1000.0 + 10.0 * vcpus)
        assert rate == pytest.approx(expected, rel=0.02), (vcpus, rate, expected)


# -- steady state ---------------------------------------------------------------

@pytest.mark.parametrize("mech,vcpus", [("uffd", 256), ("exits", 128), ("async", 64)])
def test_the_steady_state_is_exact_enough(mech, vcpus):
    """The default number of simulated faults against four times as many, and
    against a whole harness-like run (every vCPU 64 faults from a common start)."""
    cal = report.load_calibration(CAL_FILE)
    p = paramsmod.for_prediction(cal, mech, 256)
    short, _ = _rate(mech, vcpus, 256, p, faults=predict.default_faults(vcpus))
    long_, _ = _rate(mech, vcpus, 256, p, faults=4 * predict.default_faults(vcpus))
    stats, end = sim.simulate_run(mech, vcpus, 256, p, faults_per_vcpu=64)
    whole = stats.faults / end * 1e9
    print(f"{mech} V={vcpus} P=256: steady {short:.0f}, 4x longer {long_:.0f}, whole run {whole:.0f} pages/s")
    assert short == pytest.approx(long_, rel=0.02)
    assert short == pytest.approx(whole, rel=0.05)


# -- commands -------------------------------------------------------------------

def test_model_writes_rows_with_the_issues_fields(tmp_path):
    out = tmp_path / "rows.json"
    assert predict.main(["--calibration", CAL_FILE, "--pcpus", "8", "--vcpus", "1,16",
                         "--mech", "exits,uffd", "--mmu", "tdp", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and len(rows) == 4
    for r in rows:
        for key in ("mech", "vcpus", "pcpus", "mmu", "pages_per_s", "fault_latency_ns",
                    "lock_wait_ns_per_fault", "limit", "pages_per_s_per_vcpu",
                    "blocktime_ns_per_s_per_vcpu"):
            assert key in r, key
        assert set(r["fault_latency_ns"]) >= {"p50", "p99"}
        assert r["mmu"] == "tdp" and r["pcpus"] == 8
        # above the calibration host's 2 CPUs the cited parameter is shown at 0.5x and 2x
        assert set(r["cited_sensitivity"]) == {"line_transfer_ns_x0.5", "line_transfer_ns_x2"}


def test_calibrate_names_the_measurement_it_lacks(tmp_path, capsys):
    """Two 1- and 2-vCPU records without traced runs: no quantum, no mmu_lock
    hold, no async; the calibration says which measurement is missing."""
    out = tmp_path / "cal.json"
    records = [os.path.join(HERE, "data", f) for f in ("uffd-v1.json", "uffd-v2.json",
                                                       "exits-v1.json", "exits-v2.json")]
    rc = calibrate.main(records + ["--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    cal = json.loads(out.read_text())
    assert any("quantum_ns" in m and "timeslice" in m for m in cal["missing"]), cal["missing"]
    assert any("async: no records" in m for m in cal["missing"])
    assert "missing:" in text
    with pytest.raises(KeyError, match="lacks"):
        paramsmod.for_prediction(cal, "exits", 2)


# -- the CPU's state (docs/MODEL.md, "The CPU's state") ---------------------------

def test_a_runs_probe_reading_is_the_mean_of_its_probes_before_it():
    from bench.model import extract
    # the probe before the run only: the one after can carry the run's own aftermath
    # a mean over the CPUs: the readings are bimodal (quick and slow state)
    assert extract.probe_ns({"before_ns_per_call": [90.0, 110.0, 88.0], "after_ns_per_call": [300.0]}) == 96.0
    assert extract.probe_ns(None) is None
    assert extract.probe_ns({"before_ns_per_call": [], "after_ns_per_call": []}) is None


def _probe_cells(probes, cpu=100e3):
    """Cells of one mechanism whose runs carry a probe each and CPU in proportion."""
    return [{"runs": [{"probe_ns": pr, "vcpu_cpu_ns": cpu * pr / probes[0],
                       "resolver_cpu_ns": cpu / 4 * pr / probes[0], "p50_ns": 2 * cpu * pr / probes[0]}
                      for pr in probes]}]


def test_runs_in_the_slow_state_are_scaled_to_the_reference_before_the_fits():
    """Runs whose CPU cost rose with their probe (the slow state) come out of the
    normalisation with one cost; the reference is the mean probe."""
    cells = _probe_cells([90.0, 90.0, 120.0])
    ref = calibrate._normalise_to_probe(cells)
    assert ref["value"] == 100.0 and ref["n"] == 3           # the mean of the three
    # each run at the reference's state: 100 / 90 of the quick runs' cost
    assert {round(r["vcpu_cpu_ns"]) for r in cells[0]["runs"]} == {111111}
    assert {round(r["resolver_cpu_ns"]) for r in cells[0]["runs"]} == {27778}
    assert {round(r["p50_ns"]) for r in cells[0]["runs"]} == {222222}


def test_a_square_pressure_term_only_where_the_records_determine_it():
    """Four thread counts and a clear curve: kept. Three counts, or a curve lost in the
    noise (|t| < 2): the slope alone, and the parameter says why."""
    def rows(ds, curve, noise):
        # three runs a count, spread -noise, 0, +noise about the curve
        return [dict(vcpus=round(2 ** d), threads_log2=d, threads_log2_sq=d * d,
                     vcpu_cpu_ns=60e3 - 3e3 * d + curve * d * d + noise * k)
                for d in ds for k in (-1, 0, 1)]
    ds = [0.0, 1.3, 3.1, 5.0, 7.0]
    cols, why = calibrate._pressure_columns(rows(ds, 400.0, 1e3), [])
    assert cols == ["threads_log2", "threads_log2_sq"] and "kept" in why
    cols, why = calibrate._pressure_columns(rows(ds[:3], 400.0, 1e3), [])
    assert cols == ["threads_log2"] and "3 thread counts" in why
    # a curve small against the spread of the runs: t well below 2
    cols, why = calibrate._pressure_columns(rows(ds, 20.0, 5e3), [])
    assert cols == ["threads_log2"] and "t statistic" in why
    assert calibrate._square_term({}, why) == {"value": 0.0, "unit": "ns", "kind": "config", "from": why}


def test_past_the_calibrated_range_the_square_term_goes_on_along_its_tangent():
    p = paramsmod.Params(vcpu_pressure_ns_per_doubling=-3e3, vcpu_pressure_ns_per_doubling_sq=400.0,
                         pressure_doublings_max=7.0)
    f = lambda d: -3e3 * d + 400.0 * d * d
    assert sim.vcpu_pressure(p, 5.0) == pytest.approx(f(5.0))
    assert sim.vcpu_pressure(p, 7.0) == pytest.approx(f(7.0))
    slope = -3e3 + 2 * 400.0 * 7.0
    assert sim.vcpu_pressure(p, 9.0) == pytest.approx(f(7.0) + 2.0 * slope)
    assert sim.vcpu_pressure(p, 9.0) < f(9.0)                      # not the parabola
    linear = paramsmod.Params(vcpu_pressure_ns_per_doubling=-3e3)  # no square term: the line
    assert sim.vcpu_pressure(linear, 9.0) == pytest.approx(-27e3)


def test_the_medians_written_beside_a_calibration_stay_as_measured(tmp_path):
    """The calibration scales runs to its reference probe; the check medians written with
    it (--medians-out) are the records' own figures."""
    records = os.path.join(HERE, "data", "uffd-v1.json")
    cells = calibrate.load_cells([records])
    for i, r in enumerate(cells[0]["runs"]):    # runs in different states: the fits scale them
        r["probe_ns"] = 90.0 + 27.0 * i
    assert len({r["probe_ns"] for r in cells[0]["runs"]}) > 1
    before = json.dumps(calibrate.medians(cells), sort_keys=True)
    runs = [dict(r) for r in cells[0]["runs"]]
    calibrate.calibrate_cells(cells)
    assert json.dumps(calibrate.medians(cells), sort_keys=True) == before
    assert cells[0]["runs"] == runs


def test_a_run_without_a_probe_leaves_every_run_unscaled_and_the_reference_missing():
    cells = _probe_cells([90.0, 117.0])
    cells[0]["runs"].append({"probe_ns": None, "vcpu_cpu_ns": 1.0, "resolver_cpu_ns": 1.0, "p50_ns": 1.0})
    ref = calibrate._normalise_to_probe(cells)
    assert ref["value"] is None and "1 of 3 lack one" in ref["missing"]
    assert round(cells[0]["runs"][1]["vcpu_cpu_ns"]) == 130000     # as measured


def test_a_target_probe_scales_every_cpu_cost_and_nothing_else():
    cal = json.load(open(os.path.join(DATA, BOOT_SWEEPS["seed6"][0])))
    ref = cal["cpu_probe"]["value"]
    for mech in ("uffd", "async"):
        base = paramsmod.for_prediction(cal, mech, 2, fetch_delay_us=50)
        slow = paramsmod.for_prediction(cal, mech, 2, fetch_delay_us=50, cpu_probe_ns=1.5 * ref)
        for name in paramsmod.Params.names():
            a, b = getattr(base, name), getattr(slow, name)
            if name in paramsmod.CPU_COSTS:
                assert b == pytest.approx(1.5 * a), name
            else:
                assert b == a, name
    # a CPU-bound cell: 1.5x every cost is 1/1.5 the rate
    fast = predict.predict(cal, ["exits"], [64], 2, sensitivity=False)[0]
    slow = predict.predict(cal, ["exits"], [64], 2, sensitivity=False, cpu_probe_ns=1.5 * ref)[0]
    assert slow["pages_per_s"] == pytest.approx(fast["pages_per_s"] / 1.5, rel=0.03)
    assert slow["cpu_state"]["probe_ns"] == 1.5 * ref and slow["cpu_state"]["calibration_probe_ns"] == ref
    assert slow["cpu_state"]["cpu_cost_scale"] == pytest.approx(1.5)


def test_a_target_probe_with_a_calibration_without_a_reference_is_one_error(capsys):
    """The committed AMD calibration predates the probe: --cpu-probe-ns is refused, not ignored."""
    assert predict.main(["--calibration", CAL_FILE, "--pcpus", "2", "--vcpus", "1",
                         "--mech", "exits", "--cpu-probe-ns", "95"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CPU-state reference" in err[0]
    cal = json.load(open(os.path.join(DATA, BOOT_SWEEPS["seed6"][0])))
    with pytest.raises(KeyError, match="positive"):
        paramsmod.cpu_scale(cal, -1.0)


def test_the_rate_falls_as_the_probe_rises_within_a_cell():
    """What the scaling rests on, from the committed runs: within each cell of the boot's
    sweeps, log paging rate against log probe, pooled (each cell's means removed)."""
    xs, ys = [], []
    for _cal, med in BOOT_SWEEPS.values():
        for cell in json.load(open(os.path.join(DATA, med)))["cells"]:
            runs = [r for r in cell["per_run"] if r["cpu_probe_ns"]]
            x = np.log([r["cpu_probe_ns"] for r in runs])
            y = np.log([r["pages_per_s"] for r in runs])
            xs += list(x - x.mean())
            ys += list(y - y.mean())
    corr = float(np.corrcoef(xs, ys)[0, 1])
    elasticity = float(np.polyfit(xs, ys, 1)[0])
    print(f"{len(xs)} runs: pooled within-cell correlation {corr:+.2f}, elasticity {elasticity:+.2f}")
    assert corr < -0.3 and -1.5 < elasticity < -0.5


def test_a_negative_fitted_cost_is_made_missing_and_named():
    """A fitted cost below zero has not been determined: the calibration marks it missing
    with the fit that gave it, and the model then refuses that mechanism; a falling
    per-doubling slope is a slope, and stays. (lstsq bounds per-event slopes, so in a real
    calibration only an intercept can come here: see the next test.)"""
    mc = {"params": {"reader_wake_ns": calibrate._fitted(-105140.0, "resolver_cpu_ns", "resolver_sleeps_per_fault",
                                                         "sleeps/fault slope b of fits.resolver_cpu_ns"),
                     "reader_msg_ns": calibrate._fitted(3000.0, "resolver_cpu_ns", "1", "intercept a of fits.resolver_cpu_ns"),
                     "reader_pressure_ns_per_doubling": calibrate._fitted(-1000.0, "resolver_cpu_ns", "threads_log2", "slope s")},
          "fits": {"resolver_cpu_ns": {"formula": "a + b*sleeps/fault", "rel_rms": 0.45}}}
    calibrate._refuse_negative_costs("async", mc)
    p = mc["params"]
    assert p["reader_wake_ns"]["value"] is None and p["reader_wake_ns"]["kind"] == "missing"
    assert "-105140 ns" in p["reader_wake_ns"]["missing"] and "45%" in p["reader_wake_ns"]["missing"]
    # the fit is found by the parameter's `fit` key, not by its prose: a parameter
    # naming another fit in `fit` gets no RMS from this one
    mc = {"params": {"reader_msg_ns": calibrate._fitted(-5.0, "vcpu_cpu_ns", "1",
                                                        "intercept a of fits.resolver_cpu_ns")},
          "fits": {"resolver_cpu_ns": {"formula": "f", "rel_rms": 0.45}}}
    calibrate._refuse_negative_costs("async", mc)
    assert "45%" not in mc["params"]["reader_msg_ns"]["missing"]
    assert p["reader_msg_ns"]["value"] == 3000.0
    assert p["reader_pressure_ns_per_doubling"]["value"] == -1000.0


def test_a_cost_the_records_cannot_separate_is_held_at_zero_and_said():
    """Per-event costs are fitted with the bound >= 0: where the unbounded fit makes one
    negative (today's async resolver: CPU a fault up from 1 to 16 vCPUs while sleeps a
    fault fell), it is held at 0, the rest is the least-squares fit without it, the fit
    keeps the unbounded value, and the parameter's `from` says so. The pressure slope
    may fall; a fit with no negative cost is plain least squares."""
    rng = np.random.default_rng(3)
    rows = []
    for v, sleeps in ((1, 1.0), (4, 0.6), (16, 0.4), (64, 0.2), (256, 0.05)):
        tl = calibrate.threads_per_cpu_log2(v + 1, 2)
        rows.append({"vcpus": v, "resolver_sleeps_per_fault": sleeps, "threads_log2": tl,
                     "y": 30000 - 9000 * sleeps - 2500 * tl + rng.normal(0, 300)})
    coef, _res, _rms, _dropped, bound = calibrate.lstsq(rows, ["1", "resolver_sleeps_per_fault",
                                                             "threads_log2"], "y")
    plain, *_ = np.linalg.lstsq(np.array([[1.0, r["resolver_sleeps_per_fault"], r["threads_log2"]]
                                          for r in rows]), np.array([r["y"] for r in rows]), rcond=None)
    assert set(bound) == {"resolver_sleeps_per_fault"} and plain[1] < -5000
    assert bound["resolver_sleeps_per_fault"] == pytest.approx(plain[1], rel=1e-9)
    # through to the parameter: its `from` says it was held at 0, with that value
    mc = {"params": {"reader_wake_ns": calibrate._fitted(coef["resolver_sleeps_per_fault"], "resolver_cpu_ns", "resolver_sleeps_per_fault",
                                                         "sleeps/fault slope b of fits.resolver_cpu_ns")},
          "fits": {"resolver_cpu_ns": calibrate._fit_param("resolver_cpu_ns", coef, [], 0.5, [], "f", [1],
                                                           bound=bound)}}
    calibrate._note_bounds(mc)
    assert f"{plain[1]:.0f} ns" in mc["params"]["reader_wake_ns"]["from"]
    assert mc["params"]["reader_wake_ns"]["value"] == 0.0
    assert coef["resolver_sleeps_per_fault"] == 0.0 and coef["threads_log2"] < 0
    reduced, *_ = np.linalg.lstsq(np.array([[1.0, r["threads_log2"]] for r in rows]),
                                  np.array([r["y"] for r in rows]), rcond=None)
    assert [coef["1"], coef["threads_log2"]] == pytest.approx(list(reduced), rel=1e-6)
    for r in rows:
        r["y"] = 30000 + 9000 * r["resolver_sleeps_per_fault"] - 2500 * r["threads_log2"]
    coef, _res, _rms, _dropped, bound = calibrate.lstsq(rows, ["1", "resolver_sleeps_per_fault",
                                                             "threads_log2"], "y")
    assert bound == {} and coef["resolver_sleeps_per_fault"] == pytest.approx(9000)
    # the intercept (the cost a fault) is never bounded, even where a slope is: a negative
    # one is refused instead
    for r in rows:
        r["y"] = -5000 - 9000 * r["resolver_sleeps_per_fault"] + 20000 * r["threads_log2"]
    coef, _res, _rms, _dropped, bound = calibrate.lstsq(rows, ["1", "resolver_sleeps_per_fault",
                                                             "threads_log2"], "y")
    assert set(bound) == {"resolver_sleeps_per_fault"} and coef["1"] < 0
    mc = {"params": {"reader_msg_ns": calibrate._fitted(coef["1"], "resolver_cpu_ns", "1", "intercept a of fits.resolver_cpu_ns")},
          "fits": {"resolver_cpu_ns": {"formula": "f", "rel_rms": 0.1}}}
    calibrate._refuse_negative_costs("async", mc)
    assert mc["params"]["reader_msg_ns"]["kind"] == "missing"
    fit = calibrate._fit_param("resolver_cpu_ns", coef, [], 0.5, [], "f", [1],
                               bound={"resolver_sleeps_per_fault": -48598.0})
    mc = {"params": {"reader_wake_ns": calibrate._fitted(0.0, "resolver_cpu_ns", "resolver_sleeps_per_fault",
                                                         "sleeps/fault slope b of fits.resolver_cpu_ns"),
                     "reader_msg_ns": calibrate._fitted(3e4, "resolver_cpu_ns", "1", "intercept a of fits.resolver_cpu_ns")},
          "fits": {"resolver_cpu_ns": fit}}
    calibrate._note_bounds(mc)
    assert "held at 0" in mc["params"]["reader_wake_ns"]["from"] and "-48598 ns" in mc["params"]["reader_wake_ns"]["from"]
    assert "held at 0" not in mc["params"]["reader_msg_ns"]["from"]


def test_async_without_cells_at_two_vcpus_a_cpu_is_named_not_a_crash():
    """A sweep that lost its async cells above 1 vCPU (a failed record write did, today):
    the calibration names the records it needs instead of failing on an empty fit."""
    runs = [{"vcpus": v} for v in (1, 1, 1)]
    got = calibrate._cal_async(runs, 2, [])
    assert got["params"]["vcpu_pre_ns"]["value"] is None
    assert ">= 4 vCPUs" in got["params"]["vcpu_pre_ns"]["missing"]


def test_every_fitted_parameter_names_its_fit_and_coefficient():
    """A calibration written by `calibrate` (sweeps 4 and 5, regenerated from their
    records) says, for every fitted parameter, which fit and which coefficient it is, and
    the value is that coefficient (the vCPU's pre and post halves split the intercept).
    The files are committed: a change to calibrate.py shows here once they are written
    again; the dropped-column note below runs the code itself."""
    seen = 0
    for mech, mc in [(m, mc) for name in ("calibration-seed4.json", "calibration-seed5.json")
                     for m, mc in report.load_calibration(os.path.join(DATA, name))["mechanisms"].items()]:
        for name, v in mc["params"].items():
            if v["kind"] != "fitted":
                continue
            seen += 1
            fit = mc["fits"][v["fit"]]
            if v["column"] in fit["dropped_columns"]:   # no spread: the cost stays inside a
                assert v["value"] == 0.0 and "dropped" in v["from"], (mech, name)
                continue
            coef = fit["coefficients"][v["column"]]
            if name in ("vcpu_pre_ns", "vcpu_post_ns"):
                pair = mc["params"]["vcpu_pre_ns"]["value"] + mc["params"]["vcpu_post_ns"]["value"]
                assert pair == pytest.approx(coef), (mech, name)
            else:
                assert v["value"] == pytest.approx(coef), (mech, name)
    assert seen >= 40
    # a column a fit dropped (no spread) is said to be, whichever mechanism's fit it is
    fit = calibrate._fit_param("vcpu_cpu_ns", {"1": 5e4}, [], 0.1, ["vcpu_invol_per_fault"], "f", [1])
    mc = {"params": {"yield_ns": calibrate._fitted(0.0, "vcpu_cpu_ns", "vcpu_invol_per_fault",
                                                   "slope y of fits.vcpu_cpu_ns"),
                     "vcpu_pre_ns": calibrate._fitted(2.5e4, "vcpu_cpu_ns", "1", "intercept a")},
          "fits": {"vcpu_cpu_ns": fit}}
    calibrate._note_bounds(mc)
    assert mc["params"]["yield_ns"]["from"].endswith("(dropped: no spread; inside a)")
    assert "dropped" not in mc["params"]["vcpu_pre_ns"]["from"]


def test_the_committed_calibration_has_provenance_and_fits():
    cal = report.load_calibration(CAL_FILE)
    assert cal["kind"] == calibrate.CALIBRATION_KIND
    assert cal["host"]["pcpus"] == 2 and cal["records"] and cal["commands"]
    for mech in predict.MECHS:
        mc = cal["mechanisms"][mech]
        for name, v in mc["params"].items():
            assert v["kind"] in ("measured", "fitted", "derived", "config"), (mech, name, v)
        for fit in mc["fits"].values():
            assert fit["points"] and fit["rel_rms"] is not None


def test_claims_answer_from_the_committed_predictions():
    for mmu in ("shadow", "tdp"):
        rows = report.committed_predictions(mmu)
        assert {r["mech"] for r in rows} == set(predict.MECHS)
        assert {r["vcpus"] for r in rows} == set(report.VCPUS)
        c = report.claims(rows)
        assert c["pcpus"] == 256 and c["mmu"] == mmu
        for key in ("one_uffd", "many_uffds", "async_vs_exits"):
            assert c[key]["answer"] and c[key]["decided_by"]


# -- validation against a second sweep -----------------------------------------
# Each pair is (calibration, check): the check is a later sweep of the same command
# with another seed.
# - The committed calibration (sweep 1, seed 1) against sweeps 2 and 3 (seeds 2 and 3).
#   Other processes loaded this 2-CPU host during parts of both check sweeps: each cell's
#   host_noise.other_cpu_share is committed with its medians, and a cell is "quiet"
#   below QUIET.
# - A calibration from sweep 4 (seed 4, 2026-12-07) against sweep 5 (seed 5), run right
#   after it on the same boot with the host otherwise idle (docs/MODEL.md); and the
#   other way round, sweep 5 calibrating and sweep 4 checking (not "later", so not the
#   issue's check, but shown beside it).
# - A calibration from sweep 6 (seed 6) against sweep 7 (seed 7), run right after it at
#   the harness's commit 727a287 (2026-12-07 19:49-19:59 UTC, host otherwise idle).
# - A calibration from sweep 8 (seed 8) against sweep 9 (seed 9), run right after it
#   (21:06-21:15 UTC, harness commit 466651c), and sweep 10 against sweep 11 (21:30-21:40,
#   50fa783). The CPU-state scaling was committed before sweeps 8 and 9 ran, the square
#   pressure term was written while they ran; both were in 50fa783, fixed before sweeps 10
#   and 11 ran. The probe statistic (the mean of the probes just before each run) was
#   chosen after all of them had been read (docs/MODEL.md, "The CPU's state").
# Where the calibration has a CPU-state reference and the check sweep a probe reading,
# the model is given the check sweep's reading (`--cpu-probe-ns`): a measurement of the
# host's state, taken before each run, not of the mechanisms.
CAL_SEED4 = os.path.join(DATA, "calibration-seed4.json")
CAL_SEED5 = os.path.join(DATA, "calibration-seed5.json")
CAL_SEED6 = os.path.join(DATA, "calibration-seed6-20261207.json")
CAL_SEED8 = os.path.join(DATA, "calibration-seed8-20261207.json")
CAL_SEED10 = os.path.join(DATA, "calibration-seed10-20261207.json")
CAL_SEED12 = os.path.join(DATA, "calibration-seed12-20261208.json")
CAL_SEED13 = os.path.join(DATA, "calibration-seed13-20261208.json")
CAL_SEED16 = os.path.join(DATA, "calibration-seed16-20261208.json")
PAIRS = ((CAL_FILE, "check-sweep-seed2-medians.json"), (CAL_FILE, "check-sweep-seed3-medians.json"),
         (CAL_SEED4, "check-sweep-seed5-medians.json"), (CAL_SEED5, "check-sweep-seed4-medians.json"),
         (CAL_SEED6, "check-sweep-seed7-20261207-medians.json"),
         (CAL_SEED8, "check-sweep-seed9-20261207-medians.json"),
         (CAL_SEED10, "check-sweep-seed11-20261207-medians.json"),
         (CAL_SEED12, "check-sweep-seed13-20261208-medians.json"),
         (CAL_SEED16, "check-sweep-seed17-20261208-medians.json"))
PAIR_IDS = ("seed1-vs-seed2", "seed1-vs-seed3", "seed4-vs-seed5", "seed5-vs-seed4", "seed6-vs-seed7",
            "seed8-vs-seed9", "seed10-vs-seed11", "seed12-vs-seed13", "seed16-vs-seed17")
QUIET = 0.10


def test_the_crosscheck_counts_against_the_issues_bands():
    """crosscheck.outside, which every count here uses, holds the issue's bands."""
    assert (crosscheck.RATE_BAND, crosscheck.P50_BAND) == (RATE_TOLERANCE, P50_TOLERANCE)
    errors = {("uffd", 1): (RATE_TOLERANCE, -P50_TOLERANCE), ("uffd", 4): (-0.2501, 0.0),
              ("exits", 1): (0.0, 0.3501)}
    assert crosscheck.outside(errors) == [("exits", 1), ("uffd", 4)]


def _errors(rows) -> dict:
    """compare()'s rows as crosscheck's {(mech, vcpus): (rate error, p50 error)}."""
    return {(r["mech"], r["vcpus"]): (r["e_rate"], r["e_p50"]) for r in rows}


@functools.lru_cache(maxsize=None)   # the simulation is deterministic: the print and the bands share one
def compare(cal_file, check_file):
    cal = report.load_calibration(cal_file)
    check = json.load(open(os.path.join(DATA, check_file)))
    assert check["seed"] not in cal["seeds"]
    # every cell at once, in one process a usable CPU: the cells are independent and
    # deterministic, so the rows are the same as one cell at a time
    errors = crosscheck.model_errors(cal, check, True, jobs=len(os.sched_getaffinity(0)))
    rows = []
    for cell in check["cells"]:
        e_rate, e_p50 = errors[(cell["mech"], cell["vcpus"])]
        rows.append(dict(cell, e_rate=e_rate, e_p50=e_p50, model_rate=cell["pages_per_s"] * (1 + e_rate),
                         model_p50=cell["p50_ns"] * (1 + e_p50)))
    return check, rows


def worst(rows, key):
    out = {}
    for r in rows:
        w = out.get(r["mech"])
        if w is None or abs(r[key]) > abs(w[0]):
            out[r["mech"]] = (r[key], r["vcpus"])
    return out


def report_lines(cal_file, check_file, rows):
    probe = crosscheck.target_probe(report.load_calibration(cal_file), json.load(open(os.path.join(DATA, check_file))))
    lines = [f"check {check_file}: P = 2, calibration {os.path.relpath(cal_file, HERE)}, "
             + (f"CPU costs scaled to the check sweep's probe {probe:.1f} ns" if probe else
                "no CPU-state scaling (a side without a probe reading)")]
    for r in rows:
        lines.append(f"{r['mech']:9s} {r['vcpus']:4d}  rate {r['pages_per_s']:8.0f} model "
                     f"{r['model_rate']:8.0f} ({r['e_rate']:+.0%})  p50 {r['p50_ns'] / 1e3:9.1f} us "
                     f"model {r['model_p50'] / 1e3:9.1f} ({r['e_p50']:+.0%})  other CPU "
                     f"{r['other_cpu_share']:.2f}")
    for label, subset in (("every cell", rows),
                          (f"quiet cells (other CPU < {QUIET})",
                           [r for r in rows if r["other_cpu_share"] < QUIET])):
        wr, wp = worst(subset, "e_rate"), worst(subset, "e_p50")
        lines.append(f"worst error per mechanism, {label}:")
        for mech in sorted(wr):
            lines.append(f"  {mech:9s} rate {wr[mech][0]:+.0%} at {wr[mech][1]} vCPUs, "
                         f"p50 {wp[mech][0]:+.0%} at {wp[mech][1]} vCPUs")
    return "\n".join(lines)


@pytest.mark.parametrize("cal_file,check_file", PAIRS, ids=PAIR_IDS)
def test_the_comparison_with_a_second_sweep_is_printed(cal_file, check_file):
    """Prints the comparison; holds the model to what it achieves on quiet cells
    (docs/MODEL.md, Validation results): rate within 45% (`uffd-many` at 1 vCPU is +34%
    against sweep 9 and +36% against sweep 11, `uffd` at 256 vCPUs +28% against sweep 4,
    `async` at 4 vCPUs +40% against sweep 13; every other quiet cell of these pairs is
    within 25%); p50 within 60% (the worst,
    `uffd-many` at 256 vCPUs against sweep 3, +55%)."""
    _check, rows = compare(cal_file, check_file)
    print(report_lines(cal_file, check_file, rows))
    quiet = [r for r in rows if r["other_cpu_share"] < QUIET]
    assert quiet
    assert all(abs(r["e_rate"]) <= 0.45 for r in quiet), worst(quiet, "e_rate")
    assert all(abs(r["e_p50"]) <= 0.60 for r in quiet), worst(quiet, "e_p50")


# Which pairs miss the bands, and where (docs/MODEL.md, Validation results); strict, so a
# pair that starts to pass (or one that starts to fail) is a failure until this is written again
MISSES = {
    "seed1-vs-seed2": "busy cells miss the rate band: uffd at 256 vCPUs +31%, uffd-many at 4 and 64 "
                      "+41% and +31%; async's p50 at 16 +39% (since the wake credit) (AMD host, no "
                      "CPU-state probe, calibration version 1)",
    "seed1-vs-seed3": "busy cells miss the rate band (uffd-many at 4 +79%, async at 16 +32% since the "
                      "wake credit), uffd-many's p50 at 256 vCPUs +55% (AMD host, no CPU-state probe)",
    "seed4-vs-seed5": "p50s: uffd at 16 vCPUs +43%, uffd-many at 4 and 64 +44% and +36%",
    "seed5-vs-seed4": "uffd's rate at 256 vCPUs +28%, uffd-many's p50 at 64 and 256 +36% and +37%",
    "seed6-vs-seed7": "uffd-many's p50 at 256 vCPUs +37%",
    "seed8-vs-seed9": "1-vCPU cells: uffd's p50 +39%, uffd-many's rate +34%",
    "seed10-vs-seed11": "uffd-many's rate at 1 vCPU +36%, a cell that sweep 10's own medians miss too",
    # the first pair registered before either sweep was read (docs/MODEL.md): it failed on
    # the model of then (async's rate at 4 +38%, uffd-many's p50 at 64 +48%); with the
    # latency shape and the wake credit, one cell
    "seed12-vs-seed13": "async's rate at 4 vCPUs +40% (registered pair; sweep 12's own medians: no "
                        "cell outside)",
    # seed16-vs-seed17, the second registered pair, is within the bands: no mark
}


@pytest.mark.parametrize("cal_file,check_file", [
    pytest.param(c, f, id=i, marks=[pytest.mark.xfail(strict=True, raises=AssertionError, reason=MISSES[i])]
                 if i in MISSES else [])
    for (c, f), i in zip(PAIRS, PAIR_IDS)])
def test_every_cell_is_within_the_issues_bands(cal_file, check_file):
    _check, rows = compare(cal_file, check_file)
    out = set(crosscheck.outside(_errors(rows)))
    bad = [f"{r['mech']} {r['vcpus']}: rate {r['e_rate']:+.0%}, p50 {r['e_p50']:+.0%}" for r in rows
           if (r["mech"], r["vcpus"]) in out]
    assert not bad, "; ".join(bad)


# -- the host's own reproducibility ----------------------------------------------
# Nine sweeps of the issue's command on one boot of this host (2026-12-07, nothing else
# running: docs/MODEL.md, "The bands against the host's own reproducibility"): seed 2
# (06:36-06:41 UTC), seed 4 (09:09-09:14), seed 5 (09:15-09:20), seed 6 (19:49-19:54),
# seed 7 (19:54-19:59), seed 8 (21:06-21:10), seed 9 (21:10-21:15), seed 10 (21:30-21:35)
# and seed 11 (21:35-21:40). The pairs: each back-to-back pair both ways, and seed 2
# (the sweep that stands apart) with seed 4 both ways. Then, on another boot (an AMD
# EPYC, 2026-12-08), seed 12 (00:04-00:07 UTC) and seed 13 (00:07-00:10), the pair
# registered before either was read (docs/MODEL.md); seeds 14 (01:42-01:45) and 15
# (01:45-01:48), read while the wake credit and the latency shape were built; seeds 16
# (02:00-02:03) and 17 (02:04-02:07), the second registered pair.
BOOT_SWEEPS = {
    "seed2": ("calibration-seed2-20261207.json", "check-sweep-seed2-20261207-medians.json"),
    "seed4": ("calibration-seed4.json", "check-sweep-seed4-medians.json"),
    "seed5": ("calibration-seed5.json", "check-sweep-seed5-medians.json"),
    "seed6": ("calibration-seed6-20261207.json", "check-sweep-seed6-20261207-medians.json"),
    "seed7": ("calibration-seed7-20261207.json", "check-sweep-seed7-20261207-medians.json"),
    "seed8": ("calibration-seed8-20261207.json", "check-sweep-seed8-20261207-medians.json"),
    "seed9": ("calibration-seed9-20261207.json", "check-sweep-seed9-20261207-medians.json"),
    "seed10": ("calibration-seed10-20261207.json", "check-sweep-seed10-20261207-medians.json"),
    "seed11": ("calibration-seed11-20261207.json", "check-sweep-seed11-20261207-medians.json"),
    "seed12": ("calibration-seed12-20261208.json", "check-sweep-seed12-20261208-medians.json"),
    "seed13": ("calibration-seed13-20261208.json", "check-sweep-seed13-20261208-medians.json"),
    "seed14": ("calibration-seed14-20261208.json", "check-sweep-seed14-20261208-medians.json"),
    "seed15": ("calibration-seed15-20261208.json", "check-sweep-seed15-20261208-medians.json"),
    "seed16": ("calibration-seed16-20261208.json", "check-sweep-seed16-20261208-medians.json"),
    "seed17": ("calibration-seed17-20261208.json", "check-sweep-seed17-20261208-medians.json"),
}
BOOT_PAIRS = (("seed2", "seed4"), ("seed4", "seed2"), ("seed4", "seed5"), ("seed5", "seed4"),
              ("seed6", "seed7"), ("seed7", "seed6"), ("seed8", "seed9"), ("seed9", "seed8"),
              ("seed10", "seed11"), ("seed11", "seed10"), ("seed12", "seed13"), ("seed13", "seed12"),
              ("seed14", "seed15"), ("seed15", "seed14"), ("seed16", "seed17"), ("seed17", "seed16"))
# Per pair, the cells outside the issue's bands (the figures in docs/MODEL.md; the test
# does not read MODEL.md): a change that moves any of them fails the test until both are
# written again. "measured": the first sweep's measured medians read as if they were a
# prediction of the second's; "measured, probe": the same with the rates scaled by the
# ratio of the two sweeps' CPU-state probes (p50s by its inverse), as the model scales
# its CPU costs; "model": calibrated from the first, given the second's probe reading.
EXPECTED_OUTSIDE = json.load(open(os.path.join(DATA, "reproducibility-expected.json")))


def _medians(name):
    return json.load(open(os.path.join(DATA, BOOT_SWEEPS[name][1])))


def measured_against_measured(a_file, b_file, scale=1.0):
    """Sweep a's medians as the 'prediction' of sweep b's: crosscheck's errors per cell."""
    return crosscheck.measured_errors(json.load(open(os.path.join(DATA, a_file))),
                                      json.load(open(os.path.join(DATA, b_file))), scale)


def boot_pair_outside(a, b):
    """{column: sorted cells outside} for one ordered pair of the boot's sweeps."""
    return {"measured": crosscheck.outside(measured_against_measured(BOOT_SWEEPS[a][1], BOOT_SWEEPS[b][1])),
            "measured, probe": crosscheck.outside(measured_against_measured(
                BOOT_SWEEPS[a][1], BOOT_SWEEPS[b][1], crosscheck.probe_scale(_medians(a), _medians(b)))),
            "model": crosscheck.outside(_errors(compare(os.path.join(DATA, BOOT_SWEEPS[a][0]),
                                                        BOOT_SWEEPS[b][1])[1]))}


def test_the_model_against_the_hosts_own_reproducibility():
    """Prints, for each pair of the boot's sweeps above, the cells outside the issue's
    bands for the model (calibrated from the first, checked against the second, given the
    second's CPU-state probe) and for the first sweep's own measured medians taken as the
    prediction, raw and scaled by the probes: how far two measurements of the same cells
    by the same command already disagree."""
    def boot(name):
        return _medians(name)["host"]["boot_id"]
    # each pair on one boot: the CPU model and kernel are the same
    assert all(boot(a) == boot(b) for a, b in BOOT_PAIRS)
    assert len({boot(a) for a, _b in BOOT_PAIRS}) == 2
    lines = ["calibration -> check   cells outside: measured / measured, probe / model"]
    found = {}
    for a, b in BOOT_PAIRS:
        got = boot_pair_outside(a, b)
        found[f"{a}->{b}"] = {k: [list(c) for c in v] for k, v in got.items()}
        lines.append(f"{a} -> {b}  " + " / ".join(f"{len(got[k]):2d}" for k in got)
                     + f"   model: {got['model']}")
    totals = {k: sum(len(v[k]) for v in found.values()) for k in ("measured", "measured, probe", "model")}
    lines.append(f"in all: {totals}")
    print("\n".join(lines))
    assert found == EXPECTED_OUTSIDE, \
        "cells outside moved: write tests/model_data/reproducibility-expected.json and docs/MODEL.md again"


def test_the_crosscheck_counts_every_ordered_pair_and_each_sweep_in_sample(monkeypatch, capsys):
    """`python3 -m bench.model.crosscheck` (the 72-pair figures of docs/MODEL.md): every
    ordered pair, each column counted; canned model errors keep it cheap here."""
    queues = set()

    def fake_model(cal, check, use_probe, jobs=1, run_queue=None):
        queues.add(run_queue)
        bad = (0.30, 0.0) if use_probe else (0.0, 0.40)      # one cell out either way
        return {(c["mech"], c["vcpus"]): (bad if (c["mech"], c["vcpus"]) == ("uffd", 16) else (0.0, 0.0))
                for c in check["cells"]}
    monkeypatch.setattr(crosscheck, "model_errors", fake_model)
    args = [f"{os.path.join(DATA, BOOT_SWEEPS[s][0])}:{os.path.join(DATA, BOOT_SWEEPS[s][1])}"
            for s in ("seed2", "seed4", "seed5")]
    assert crosscheck.main(args) == 0
    out = capsys.readouterr().out
    assert "seed2->seed4" in out and "seed5->seed4" in out and out.count("->") == 6
    assert queues == {None}
    queues.clear()
    assert crosscheck.main(["--run-queue", "eevdf"] + args[:2]) == 0   # reaches every model run
    assert queues == {"eevdf"}
    capsys.readouterr()
    expected = EXPECTED_OUTSIDE
    measured = sum(len(expected[f"{a}->{b}"]["measured"]) for a, b in
                   (("seed2", "seed4"), ("seed4", "seed2"), ("seed4", "seed5"), ("seed5", "seed4")))
    result = crosscheck.crosscheck({s: (json.load(open(os.path.join(DATA, BOOT_SWEEPS[s][0]))),
                                        json.load(open(os.path.join(DATA, BOOT_SWEEPS[s][1]))))
                                    for s in ("seed2", "seed4", "seed5")})
    assert result["totals"]["model"] == 6 and result["totals"]["model, no probe"] == 6
    assert sum(len(result["pairs"][k]["measured"]) for k in
               ("seed2->seed4", "seed4->seed2", "seed4->seed5", "seed5->seed4")) == measured
    assert result["in_sample"] == {s: [("uffd", 16)] for s in ("seed2", "seed4", "seed5")}
    with pytest.raises(SystemExit) as exit_:
        crosscheck.main(["no-colon.json"])
    assert exit_.value.code == 2


def test_measured_against_measured_sees_a_change_past_the_band(tmp_path):
    """The reproducibility count is not blind: against sweep 4's own medians, a copy
    with one cell's p50 36% higher (or its rate 26% lower) is that cell outside; 34%
    higher (24% lower) is none."""
    own = BOOT_SWEEPS["seed4"][1]
    assert crosscheck.outside(measured_against_measured(own, own)) == []
    for key, factor, n in (("p50_ns", 1.36, 1), ("p50_ns", 1.34, 0),
                           ("pages_per_s", 0.74, 1), ("pages_per_s", 0.76, 0)):
        copy = json.load(open(os.path.join(DATA, own)))
        cell = next(c for c in copy["cells"] if (c["mech"], c["vcpus"]) == ("uffd", 16))
        cell[key] *= factor
        path = tmp_path / "changed.json"
        path.write_text(json.dumps(copy))
        assert crosscheck.outside(measured_against_measured(str(path), own)) == ([("uffd", 16)] if n else [])
