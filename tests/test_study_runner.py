"""The study driver's step runner: order, needs, --jobs, markers and stopping."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

from scripts import study_runner as runner


@dataclass
class S:
    name: str
    argv: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()
    action: object = None
    done_if: object = None

    def text(self) -> str:
        return " ".join(self.argv) or self.name


def cmd(name: str) -> list[str]:
    return [sys.executable, "-c", f"# {name}"]


@pytest.fixture
def timeline(monkeypatch):
    """Commands are recorded with their start and end, each taking 0.2 s (``slow``: 0.6 s);
    a command whose text holds ``fail`` exits 1."""
    events, lock = [], threading.Lock()

    def fake(argv):
        with lock:
            events.append(("start", argv[-1][2:]))
        time.sleep(0.6 if "slow" in argv[-1] else 0.2)
        with lock:
            events.append(("end", argv[-1][2:]))
        return 1 if "fail" in argv[-1] else 0

    monkeypatch.setattr(runner, "run_command", fake)
    return events


def most_at_once(events) -> int:
    now = top = 0
    for kind, _ in events:
        now += 1 if kind == "start" else -1
        top = max(top, now)
    return top


def test_one_job_runs_the_plan_in_order(tmp_path, timeline):
    steps = [S(n, cmd(n)) for n in ("a", "b", "c")]
    assert runner.run(steps, tmp_path, jobs=1) == ([], [])
    assert [n for kind, n in timeline if kind == "start"] == ["a", "b", "c"]
    assert most_at_once(timeline) == 1


def test_jobs_run_side_by_side_but_never_before_what_they_need(tmp_path, timeline):
    # The proxy outlasts the grid: the arm, needing the proxy, must wait past a free job.
    steps = [S("proxy", cmd("slow proxy")), S("grid", cmd("grid")),
             S("arm", cmd("arm"), needs=("proxy",)), S("choice", needs=("grid",)),
             S("final", cmd("final"), needs=("choice",))]  # fmt: skip
    assert runner.run(steps, tmp_path, jobs=2) == ([], [])
    order = [(kind, n) for kind, n in timeline]
    assert most_at_once(timeline) == 2
    assert order.index(("end", "slow proxy")) < order.index(("start", "arm"))
    assert order.index(("start", "final")) < order.index(("end", "slow proxy"))  # beside it
    assert order.index(("end", "grid")) < order.index(("start", "final"))  # via the choice
    assert (tmp_path / ".steps" / "choice.done").is_file()


def test_a_failed_step_blocks_only_what_needs_it(tmp_path, timeline, capsys):
    steps = [S("proxy", cmd("fail")), S("arm", cmd("arm"), needs=("proxy",)),
             S("after_arm", cmd("after"), needs=("arm",)), S("other", cmd("other"))]  # fmt: skip
    assert runner.run(steps, tmp_path, jobs=2) == (["proxy"], ["arm", "after_arm"])
    assert [n for kind, n in timeline if kind == "start"] == ["fail", "other"]
    out = capsys.readouterr().out
    assert "arm: not started: it needs proxy, which did not finish" in out
    assert "after_arm: not started: it needs arm" in out
    assert sorted(p.name for p in (tmp_path / ".steps").iterdir()) == ["other.done"]


def test_a_rerun_starts_only_what_did_not_finish_and_a_changed_command(tmp_path, timeline):
    steps = [S("a", cmd("a")), S("b", cmd("fail"))]
    runner.run(steps, tmp_path, jobs=2)
    timeline.clear()
    steps = [S("a", cmd("a")), S("b", cmd("b"))]  # b's command changed, and now works
    assert runner.run(steps, tmp_path, jobs=2) == ([], [])
    assert [n for kind, n in timeline if kind == "start"] == ["b"]
    timeline.clear()
    steps[0].argv = [*cmd("a"), "--workers", "4"]  # the workers are not part of the key
    assert runner.run(steps, tmp_path, jobs=2) == ([], [])
    assert timeline == []


def test_a_stopped_command_stops_the_others_and_marks_nothing(tmp_path):
    # Real processes: one sleeps, the other is stopped by SIGTERM (a user's or a
    # scheduler's); the study stops at once, the sleeper told to stop too.
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    stopped = [sys.executable, "-c", "import os, signal, time; time.sleep(1); "
               "os.kill(os.getpid(), signal.SIGTERM)"]  # fmt: skip
    start = time.monotonic()
    with pytest.raises(SystemExit) as err:
        runner.run([S("sleeper", sleeper), S("stopped", stopped)], tmp_path, jobs=2)
    assert err.value.code == 130
    assert time.monotonic() - start < 30
    assert not (tmp_path / ".steps").exists()
    assert not runner._live  # every command has ended


def test_an_action_that_breaks_stops_the_command_already_started(tmp_path):
    # Step a's command may be starting in its thread when b's action raises: it is
    # stopped (or never started) either way, not waited for.
    def broken():
        raise ValueError("a malformed recipe")

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    for _ in range(3):
        start = time.monotonic()
        with pytest.raises(ValueError, match="malformed"):
            runner.run([S("a", sleeper), S("b", cmd("b"), action=broken)], tmp_path, jobs=2)
        assert time.monotonic() - start < 30 and not runner._live


def test_sigterm_to_the_study_stops_every_command(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    start = time.monotonic()
    timer.start()
    with pytest.raises(runner.Terminated):
        runner.run([S("a", sleeper), S("b", sleeper)], tmp_path, jobs=2)
    timer.join()
    assert time.monotonic() - start < 30 and not runner._live
    assert not (tmp_path / ".steps").exists()
    assert signal.getsignal(signal.SIGTERM) is not runner.on_sigterm  # the handler restored


def test_a_misspelt_need_is_refused(tmp_path):
    with pytest.raises(ValueError, match="the plan does not have: prxoy"):
        runner.run([S("proxy", cmd("p")), S("arm", cmd("a"), needs=("prxoy",))], tmp_path)
