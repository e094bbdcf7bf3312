"""The whole job's plan and ETA (cape_bench.job_clock): counted once per model, estimated only from measurements."""

from __future__ import annotations

from cape_bench.job_clock import JobClock, clock_text


def test_plan_counts_a_shared_model_once_and_names_what_trains():
    clock = JobClock(4, {("capenext", 1): (800, "m/capenext"), ("capenext-wrong-class", 1): (800, "m/capenext"),
                         ("capex", 1): (800, "m/capex"), ("oracle", 1): (0, "")})
    assert clock.total_iterations == 1600
    assert clock.plan_text() == "job: 4 cells; 2 models to train first, 1,600 iterations in all: capenext, capex"
    assert JobClock(2, {("oracle", 1): (0, "")}).plan_text().endswith("no model to train (cached or none needed)")


def test_eta_comes_from_the_pace_measured_so_far():
    clock = JobClock(4, {("capenext", 1): (800, "a"), ("capenext-wrong-class", 1): (800, "a"),
                         ("capex", 1): (400, "b"), ("oracle", 1): (0, "")})
    clock.started -= 100  # as if the job began 100 s ago
    line = clock.cell_done("capenext", 1, prepare_s=80.0, cell_s=90.0)  # 0.1 s per iteration, 10 s of evaluation
    # left: 400 iterations × 0.1 s + 3 cells × 10 s = 70 s
    assert line.startswith("job: 1/4 cells in 1 min 40 s") and "≈ 1 min 10 s left" in line
    assert "400 training iterations at 0.10 s" in line
    line = clock.cell_done("capenext-wrong-class", 1, prepare_s=0.5, cell_s=10.0)  # shared model: nothing trained
    assert clock.trained_iterations == 800 and "400 training iterations" in line
    assert clock.cell_done("capex", 1, 40.0, 50.0).endswith("(1 cells, at this job's pace so far)")
    assert clock.cell_done("oracle", 1, 0.0, 1.0).startswith("job: 4/4 cells in")


def test_no_eta_before_anything_trained():
    clock = JobClock(3, {("capex", 1): (800, "b"), ("capeformer", 1): (800, "c"), ("oracle", 1): (0, "")})
    assert "no ETA before a model has trained" in clock.cell_done("oracle", 1, 0.0, 0.2)


def test_clock_text():
    assert (clock_text(42), clock_text(725), clock_text(3720)) == ("42 s", "12 min 05 s", "1 h 02 min")
