"""scripts/mutransfer_study.py: the μTransfer study's driver (plan, resume, arm D, summary)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from lstm_lightning import results
from lstm_lightning.experiments import load_definitions
from lstm_lightning.fit import build_cli
from scripts import mutransfer_study as study
from scripts import mutransfer_summary as summ
from scripts import prose_corpus, stdlib_corpus
from scripts import study_design as design
from scripts import study_runner as runner

TOY = ["--steps", "20", "--proxy_width", "8", "--widths", "16,24", "--c_widths", "16",
       "--proxy_trials", "4", "--c_trials", "2", "--seeds", "1,2", "--d_grid=-6,-4",
       "--d_extend", "1", "--workers", "1"]  # fmt: skip


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The driver's args at toy scale in tmp_path, with no STUDY_* variable leaking in."""
    for _, env, _, _ in study.SETTINGS:
        monkeypatch.delenv(env, raising=False)

    def make(command="run", *extra):
        return study.parse([command, "--runs", str(tmp_path / "runs"), *TOY, *extra])

    return make


def names(args) -> list[str]:
    return [s.name for s in study.plan(args)]


def test_the_plan_runs_the_proxies_first_then_width_by_width(toy):
    order = names(toy("plan"))
    proxies = ["proxy_mup", "proxy_sp", "proxy_mup_tpe"]
    assert order[:8] == ["stdlib.data", "prose.data", *(f"{c}.{p}" for c in ("stdlib", "prose")
                                                         for p in proxies)]  # fmt: skip
    w16 = ["A", "B", "A2", "B2", "D_grid", "D_choose", "D", "C_search", "C"]
    assert order[8:26] == [f"{c}.w16.{a}" for c in ("stdlib", "prose") for a in w16]
    # the hazard experiments at the first target width, before the next width
    hazards = [f"{c}.w16.hazard_A2_{h}" for c in ("stdlib", "prose") for h in study.HAZARDS]
    assert order[26 : 26 + len(hazards)] == hazards
    assert order[26 + len(hazards) :] == [f"{c}.w24.{a}" for c in ("stdlib", "prose")
                                          for a in w16[:7]]  # fmt: skip
    assert names(toy("plan", "--hazards", "-"))[26:28] == ["stdlib.w24.A", "stdlib.w24.B"]
    # without arm A2: no TPE proxy, no A2 or B2 step
    assert not [
        n
        for n in names(toy("plan", "--a2_trials", "0", "--hazard_arm", "A"))
        if "tpe" in n or n[-3:] in (".A2", ".B2")
    ]
    step = next(s for s in study.plan(toy("plan")) if s.name == "stdlib.proxy_mup_tpe")
    assert step.argv[step.argv.index("--sampler") + 1] == "tpe" and step.runs == 128
    with pytest.raises(SystemExit, match="--hazards: unknown"):
        toy("plan", "--hazards", "eps_scalling")


def test_a_hazard_is_an_arms_recipe_with_one_change_or_is_skipped(toy):
    hazards = "readout_zero_init_on,readout_zero_init_off,forget_bias_2,readout_sp,hidden_lr_sp"
    args = toy("run", "--hazards", hazards, "--hazard_arm", "A")
    best = args.runs / "stdlib" / "proxy_mup" / "best.yaml"
    with pytest.raises(study.StepFailed, match="best.yaml is missing"):
        study.write_hazard(args, "stdlib", "forget_bias_2", 16)
    best.parent.mkdir(parents=True)
    recipe = {"model": {"learning_rate": 0.01, "readout_zero_init": True, "init_std": 1.8}}
    best.write_text(yaml.safe_dump(recipe))
    with pytest.raises(study.Unchanged):  # the best trial already zero-initialised its readout
        study.write_hazard(args, "stdlib", "readout_zero_init_on", 16)
    recipe["model"]["output_mult"] = 1.5
    best.write_text(yaml.safe_dump(recipe))
    # SP's rule for one class at the target: the recipe's value (default 1) times m = 16 / 8
    for hazard, change in (("readout_zero_init_off", {"readout_zero_init": False}),
                           ("forget_bias_2", {"forget_bias": 2.0}),
                           ("readout_sp", {"output_mult": 3.0}),
                           ("hidden_lr_sp", {"hidden_lr_mult": 2.0})):  # fmt: skip
        study.write_hazard(args, "stdlib", hazard, 16)
        path = study.hazard_recipe(args, "stdlib", hazard)
        assert path.name == f"hazard_A_{hazard}.yaml"  # its transfer's group names the arm
        assert yaml.safe_load(path.read_text()) == {"model": {**recipe["model"], **change}}
    step = next(s for s in study.plan(args) if s.name == "stdlib.w16.hazard_A_forget_bias_2")
    assert "--from_file" in step.argv and "stdlib_mup_w16.yaml" in " ".join(step.argv)
    assert step.argv[step.argv.index("--seeds") + 1] == "1,2"
    # by default the hazards change A2's recipe, the TPE proxy's best; only a muP arm's
    args = toy("run", "--hazards", "forget_bias_2")
    with pytest.raises(study.StepFailed, match="proxy_mup_tpe/best.yaml is missing"):
        study.write_hazard(args, "stdlib", "forget_bias_2", 16)
    for arm in ("B", "C"):
        with pytest.raises(SystemExit, match=f"--hazard_arm {arm}: use one of A, A2 "):
            toy("plan", "--hazard_arm", arm)
    with pytest.raises(SystemExit, match=r"A2: its proxy search has no trials \(--a2_trials 0\)"):
        toy("plan", "--a2_trials", "0")
    assert toy("plan", "--a2_trials", "0", "--hazards", "-").hazard_arm == "A2"  # no hazards
    assert toy("summary", "--a2_trials", "0").a2_trials == 0  # summary runs no hazard


def test_the_plan_prints_every_command_and_its_core_seconds(toy, capsys):
    assert study.main(["plan", "--runs", str(toy().runs), *TOY]) == 0
    out = capsys.readouterr().out
    assert "cli.py tune --config" in out and "--study proxy_mup --trials 4" in out
    assert "--labels w16_log2lr-6,w16_log2lr-5,w16_log2lr-4" in out
    assert "transfer --study direct_sp_w16 --widths 16 --seeds 1,2" in out
    assert "total" in out and "core-seconds" in out
    assert not (toy().runs / "configs").exists()  # plan writes nothing


def test_costs_scale_with_runs_steps_and_width():
    step = study.Step("x", "p", ["python"], runs=2, width=512, steps=1000)
    per_run = (1000 + study.VAL_STEPS) * design.SECONDS_PER_STEP[512] + study.RUN_OVERHEAD
    assert step.cost() == pytest.approx(2 * per_run)
    assert study.seconds_per_step(1024) == pytest.approx(4 * design.SECONDS_PER_STEP[512])


def test_derived_configs_keep_one_horizon_validated_at_half(toy):
    args = toy()
    path = study.derived_config(args, "prose", "sp", 24)
    tree = yaml.safe_load(path.read_text())
    assert tree["trainer"]["max_steps"] == 20 and tree["trainer"]["val_check_interval"] == 10
    assert tree["model"]["hidden_size"] == 24 and tree["model"]["base_hidden_size"] == 8
    assert tree["model"]["parametrization"] == "sp" and tree["data"]["path"] == "data/prose.txt"
    before = path.stat().st_mtime_ns
    study.derived_config(args, "prose", "sp", 24)
    assert path.stat().st_mtime_ns == before  # the same text is not rewritten


@pytest.mark.parametrize("corpus, parametrization", [("stdlib", "mup"), ("prose", "sp")])
def test_every_derived_config_builds_the_model_it_names(toy, corpus, parametrization,
                                                       tmp_path, monkeypatch):  # fmt: skip
    args = toy()
    monkeypatch.chdir(tmp_path)  # the configs read data/<corpus>.txt from the current folder
    assert stdlib_corpus.main(["--out", "data/stdlib.txt", "--bytes", "200000"]) == 0
    assert prose_corpus.main(["--out", "data/prose.txt", "--bytes", "200000"]) == 0
    config = study.derived_config(args, corpus, parametrization, 24)
    cli = build_cli(["--config", str(config), "--trainer.logger", "false"], run=False)
    assert cli.model.hparams.parametrization == parametrization
    assert cli.model.net.layers[0].hidden_size == 24 and cli.trainer.max_steps == 20


@pytest.mark.parametrize(
    "flags, message",
    [(["--steps", "21"], "--steps must be even"), (["--corpora", "perl"], "unknown ['perl']"),
     (["--widths", "a"], "invalid literal"), (["--d_grid=-5"], "--d_grid LOW,HIGH"),
     (["--jobs", "0"], "--jobs 0: give 1 or more")],
)  # fmt: skip
def test_bad_settings_are_one_line(toy, flags, message):
    with pytest.raises(SystemExit) as err:
        toy("plan", *flags)
    assert str(err.value).startswith("error: ") and message in str(err.value)


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDY_WORKERS", "3")
    monkeypatch.setenv("STUDY_CORPORA", "prose")
    args = study.parse(["plan", "--runs", str(tmp_path)])
    assert args.corpora == ["prose"]
    assert study.plan(args)[1].argv[-2:] == ["--workers", "3"]


def test_arm_d_grid_file_defines_the_range_the_driver_uses():
    groups = load_definitions(study.ROOT / study.ARM_D_DEFS).ARM_D["subexperiments"]
    log2 = sorted({round(math.log2(g["overrides"]["learning_rate"])) for g in groups})
    assert (log2[0], log2[-1]) == study.D_RANGE and log2 == list(range(log2[0], log2[-1] + 1))
    assert all(g["overrides"]["parametrization"] == "sp" for g in groups)


# --- resuming -------------------------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch):
    """Commands are recorded, not run; arm D's choice is a stub; the corpora count as
    written (whether this checkout's data/ holds them is not these tests' business); arm
    A's transfer writes the best.yaml that the hazard experiments read, as it does."""
    calls = []
    monkeypatch.setattr(study, "data_ready", lambda corpus: True)

    def fake(argv):
        calls.append(argv)
        if argv[2:4] == ["transfer", "--study"] and argv[4] in ("proxy_mup", "proxy_mup_tpe"):
            best = Path(argv[argv.index("--runs_dir") + 1]) / argv[4] / "best.yaml"
            best.parent.mkdir(parents=True, exist_ok=True)
            best.write_text("model:\n  learning_rate: 0.01\n  readout_zero_init: true\n")
        return 0

    monkeypatch.setattr(runner, "run_command", fake)
    monkeypatch.setattr(study, "choose_d", lambda args, corpus, width: f"chose {corpus} {width}")
    return calls


def test_a_rerun_starts_nothing_that_finished(toy, recorded):
    args = toy()
    assert study.run(args) == 0
    first = len(recorded)
    # every command once, but the 2 hazards whose change the recipe already has (zero-init)
    assert first == len([s for s in study.plan(args) if s.argv and s.done_if is None]) - 2
    assert study.run(args) == 0
    assert len(recorded) == first  # every step's marker holds its command
    marker = args.runs / ".steps" / "stdlib.w16.D_choose.done"
    assert "chose stdlib 16" in marker.read_text()


def test_an_interrupted_study_resumes_at_the_step_in_flight(toy, recorded, monkeypatch):
    args = toy()
    real = runner.run_command

    def stop_at_the_fourth(argv):
        if len(recorded) == 3:
            raise SystemExit(130)
        return real(argv)

    monkeypatch.setattr(runner, "run_command", stop_at_the_fourth)
    with pytest.raises(SystemExit):
        study.run(args)
    done = sorted(p.name for p in (args.runs / ".steps").iterdir())
    assert done == ["stdlib.proxy_mup.done", "stdlib.proxy_mup_tpe.done", "stdlib.proxy_sp.done"]
    monkeypatch.setattr(runner, "run_command", real)
    assert study.run(args) == 0
    resumed = " ".join(recorded[3])  # prose's muP proxy, then the rest
    assert "--study proxy_mup --" in resumed and "prose" in resumed


def test_a_changed_command_reruns_but_other_workers_do_not(toy, recorded):
    study.run(toy())
    n = len(recorded)
    study.run(toy("run", "--workers", "2"))
    assert len(recorded) == n
    study.run(toy("run", "--proxy_trials", "5"))  # a bigger search resumes the studies
    assert [" ".join(c).count("--trials 5") for c in recorded[n:]] == [1, 1, 1, 1]


def test_a_failed_step_is_reported_and_the_rest_goes_on(toy, recorded, monkeypatch, capsys):
    real = runner.run_command
    monkeypatch.setattr(runner, "run_command", lambda a: 1 if "proxy_sp" in a else real(a))
    assert study.run(toy()) == 1
    out = capsys.readouterr().out
    assert "stdlib.proxy_sp: FAILED" in out and "failed: stdlib.proxy_sp, prose.proxy_sp;" in out
    # arm B transfers the SP proxy's best trial: not started; every other arm ran
    assert "not started (a step they need failed): stdlib.w16.B, prose.w16.B" in out
    assert not any("--study proxy_sp" in " ".join(c) for c in recorded)
    assert any("proxy_mup_tpe" in c and "transfer" in c for c in recorded)


def test_jobs_share_the_cores_and_keep_what_each_step_needs(toy, recorded, monkeypatch):
    monkeypatch.setattr(study, "cores", lambda: 8)
    args = toy("run", "--jobs", "3", "--workers", "auto")
    assert args.workers == "2" and study.plan(args)[2].argv[-2:] == ["--workers", "2"]
    assert toy("run", "--jobs", "3", "--workers", "1").workers == "1"  # a number stays
    steps = {s.name: s for s in study.plan(args)}
    assert steps["stdlib.w16.B2"].needs == ("stdlib.w16.A2",)  # A2's transfer writes its recipe
    assert steps["stdlib.w16.D"].needs == ("stdlib.w16.D_choose",)
    hazards = [s for s in steps.values() if "hazard" in s.name]
    assert hazards and all(s.needs == (s.name.split(".hazard")[0] + ".A2",) for s in hazards)
    for name, step in steps.items():  # the plan's order keeps every need before its step
        assert all(list(steps).index(n) < list(steps).index(name) for n in step.needs), name
    assert study.run(args) == 0
    assert len(recorded) == len([s for s in steps.values() if s.argv and s.done_if is None]) - 2


# --- arm D's choice -------------------------------------------------------------------------


def test_best_of_grid_prefers_the_lower_loss_then_the_smaller_rate():
    losses = {-7: 1.5, -6: 1.2, -5: 1.2, -4: math.inf, -3: 0.5}
    assert study.best_of_grid(losses, -7, -4) == -6
    assert study.best_of_grid({-4: math.inf}, -7, -4) is None


@pytest.mark.parametrize(
    "losses, extend, added, chosen",
    [
        ({-6: 1.3, -5: 1.2, -4: 1.25}, 1, [], -5),  # inside: no extension
        ({-7: 1.0, -6: 1.1, -5: 1.2, -4: 1.3}, 1, [-7], -7),  # low edge, one octave allowed
        ({-8: 0.9, -7: 1.0, -6: 1.1, -5: 1.2, -4: 1.3}, 3, [-7, -8, -9], -8),
        ({-6: 1.3, -5: 1.2, -4: 1.1}, 0, [], -4),  # at the edge, no octave allowed
    ],
)
def test_arm_d_widens_its_grid_at_an_edge(toy, monkeypatch, losses, extend, added, chosen):
    args = toy("run", "--d_extend", str(extend))
    ran = []
    monkeypatch.setattr(study, "grid_losses", lambda a, c, w: {k: v for k, v in losses.items()
                        if args.d_grid[0] - len(ran) <= k <= args.d_grid[1]})  # fmt: skip

    def fake(argv):
        ran.append(int(argv[argv.index("--labels") + 1].split("log2lr")[1]))
        return 0

    monkeypatch.setattr(runner, "run_command", fake)
    note = study.choose_d(args, "stdlib", 16)
    assert ran == added
    best = yaml.safe_load((args.runs / "stdlib" / "arm_d_w16.yaml").read_text())
    assert best == {"model": {"learning_rate": 2.0**chosen, "parametrization": "sp"}}
    assert f"log2 lr {chosen}" in note


# --- the summary ----------------------------------------------------------------------------


RHO = 1e-5  # torchmetrics' Spearman adds 1e-6 to its denominator


def test_spearman_by_hand():
    assert summ.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0, abs=RHO)
    assert summ.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0, abs=RHO)
    # Tied values share their mean rank: (3.5, 1, 3.5, 2) against (4, 1, 3, 2) -> 4.5 / sqrt(22.5)
    assert summ.spearman([3, 1, 3, 2], [4, 1, 3, 2]) == pytest.approx(4.5 / 22.5**0.5, abs=RHO)
    # Spearman = 1 - 6 sum d^2 / (n (n^2 - 1)) without ties: d = (0, 0, 1, -1) -> 0.8
    assert summ.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8, abs=RHO)
    assert summ.spearman([1, 2], [1, 2]) is None and summ.spearman([1, 1, 1], [1, 2, 3]) is None


def result(group, width, loss, *, seed=1, study_name=None, trial=None, cost=10.0, lr=0.01):
    hparams = {"parametrization": "sp", "optimizer": "adam", "hidden_size": width,
               "learning_rate": lr, "seed": seed, "max_steps": 1000}  # fmt: skip
    return results.make(group=group, label=f"x{seed}", overrides={}, config_hash="0",
                        hparams=hparams, status="completed", metrics={"val/loss": loss},
                        core_seconds=cost, study=study_name, trial=trial)  # fmt: skip


def test_arm_rows_and_a_against_c():
    found = [result("proxy_mup.transfer", 256, x, seed=s) for s, x in ((1, 1.50), (2, 1.52))]
    found += [result("direct_sp_w256.transfer", 256, x, seed=s) for s, x in ((1, 1.6), (2, 1.7))]
    found += [result("proxy_mup", 32, 2.0, study_name="proxy_mup", trial=t, cost=5.0)
              for t in range(4)]  # fmt: skip
    found += [result("direct_sp_w256", 256, 1.7, study_name="direct_sp_w256", trial=t,
                     cost=100.0) for t in range(2)]  # fmt: skip
    a = summ.arm_row(found, "stdlib", 256, "A")
    c = summ.arm_row(found, "stdlib", 256, "C")
    assert a["loss_mean"] == pytest.approx(1.51) and a["loss_std"] == pytest.approx(0.01)
    assert (a["tuning_core_seconds"], a["training_core_seconds"]) == (20.0, 20.0)
    # planned: the plan's cost of 4 proxy runs, whatever the load made their wall time
    quiet = 4 * ((1000 + study.VAL_STEPS) * design.SECONDS_PER_STEP[32] + study.RUN_OVERHEAD)
    assert a["tuning_planned_core_seconds"] == pytest.approx(quiet)
    versus = summ.versus(a, c)
    assert versus["a_wins"] and versus["clear"] and versus["tuning_ratio"] == pytest.approx(0.1)
    assert versus["gap"] == pytest.approx(0.14)
    c["loss_min"] = 1.51  # the ranges now overlap
    assert not summ.versus(a, c)["clear"]


def test_arm_a2_is_its_own_tpe_proxy_and_is_judged_against_c_and_d(toy, tmp_path, capsys):
    found = [result("proxy_mup_tpe.transfer", 256, x, seed=s) for s, x in ((1, 1.30), (2, 1.31))]
    found += [result("proxy_mup_tpe", 32, 1.7, study_name="proxy_mup_tpe", trial=t, cost=5.0)
              for t in range(8)]  # fmt: skip
    found += [result("proxy_mup", 32, 2.0, study_name="proxy_mup", trial=t) for t in range(4)]
    a2 = summ.arm_row(found, "stdlib", 256, "A2")
    assert a2["loss_mean"] == pytest.approx(1.305) and a2["tuning_core_seconds"] == 40.0
    args = toy("summary")  # the toy's first target width is 16, its proxy 8
    for i, r in enumerate(found + [result("arm_d_w16.transfer", 16, 1.4, seed=s) for s in (1, 2)]):
        r["hparams"]["hidden_size"] = 8 if r["study"] else 16
        results.write(args.runs / "stdlib" / r["group"] / f"run{i}", r)
    assert summ.summary(args) == 0
    out = capsys.readouterr().out
    assert "| stdlib | 16 | A2 | 1.3050 ± 0.0050 |" in out
    assert "width 16: A2 <= D (gap +0.0950" in out


def test_arm_b2_is_a2s_recipe_under_sp(toy):
    args = toy()
    with pytest.raises(study.StepFailed, match="proxy_mup_tpe/best.yaml is missing"):
        study.write_b2(args, "stdlib")
    best = args.runs / "stdlib" / "proxy_mup_tpe" / "best.yaml"
    best.parent.mkdir(parents=True)
    recipe = {"model": {"parametrization": "mup", "learning_rate": 0.15, "init_std": 2.4}}
    best.write_text(yaml.safe_dump(recipe))
    study.write_b2(args, "stdlib")
    written = yaml.safe_load((args.runs / "stdlib" / "arm_b2.yaml").read_text())
    assert written == {"model": {**recipe["model"], "parametrization": "sp"}}
    step = next(s for s in study.plan(args) if s.name == "stdlib.w16.B2")
    assert "stdlib_sp_w16.yaml" in " ".join(step.argv) and "arm_b2.yaml" in " ".join(step.argv)


def test_hazard_rows_compare_each_change_with_the_arm_it_changed():
    found = [result("proxy_mup.transfer", 256, x, seed=s) for s, x in ((1, 1.50), (2, 1.52))]
    found += [result("proxy_mup_tpe.transfer", 256, x, seed=s) for s, x in ((1, 1.2), (2, 1.3))]
    found += [result("hazard_A_init_std_1.transfer", 256, x, seed=s)
              for s, x in ((1, 1.40), (2, 1.41))]  # fmt: skip
    found += [result("hazard_A2_eps_scaling.transfer", 256, 1.26, seed=s) for s in (1, 2)]
    arms = {arm: summ.arm_row(found, "stdlib", 256, arm) for arm in ("A", "A2")}
    row, row2 = summ.hazard_rows(found, "stdlib", 256, arms)
    assert row["hazard"] == "init_std_1" and row["loss_mean"] == pytest.approx(1.405)
    assert row["versus_base"]["gap"] == pytest.approx(0.105) and row["versus_base"]["clear"]
    assert (row2["base"], row2["hazard"]) == ("A2", "eps_scaling")
    assert row2["versus_base"]["gap"] == pytest.approx(-0.01)  # A2's seeds span it
    assert not row2["versus_base"]["clear"]
    assert "| stdlib | 256 | A | init_std_1 | 1.4050 ± 0.0050 | 2/2 | +0.1050 | clear |" in (
        summ.markdown(
            {
                "arms": [],
                "a_versus": [],
                "horizon_stability": [],
                "hazards": [row],
                "proxies_agree": [],
                "proxy_vs_target_ranking": [],
            }
        )  # fmt: skip
    )


def test_the_paired_ranking_uses_the_same_trial_numbers():
    found = [result("proxy_sp", 8, x, study_name="proxy_sp", trial=t)
             for t, x in enumerate([1.0, 2.0, 3.0, 4.0])]  # fmt: skip
    found += [result("direct_sp_w16", 16, x, study_name="direct_sp_w16", trial=t)
              for t, x in enumerate([1.1, 2.2, 3.3])]  # fmt: skip
    paired = summ.paired(found, "proxy_sp", "direct_sp_w16")
    assert paired["n"] == 3 and paired["spearman"] == pytest.approx(1.0, abs=RHO)


def test_summary_of_an_empty_study_is_a_table_with_no_rows(toy, capsys):
    args = toy("summary")
    args.runs.mkdir(parents=True, exist_ok=True)
    assert summ.summary(args) == 0
    assert "| corpus | width | arm |" in capsys.readouterr().out
    assert (args.runs / "arms.png").read_bytes().startswith(b"\x89PNG")  # the figure
    assert not (args.runs / "hazards.png").exists()  # no hazard experiment yet


def test_summary_draws_the_hazards_once_one_has_a_seed(toy):
    args = toy("summary")
    folder = args.runs / "stdlib"
    for group, loss in (("proxy_mup_tpe.transfer", 1.2), ("hazard_A2_eps_scaling.transfer", 1.3)):
        results.write(folder / group / "w16_seed1", result(group, 16, loss))
    assert summ.summary(args) == 0
    assert (args.runs / "hazards.png").read_bytes().startswith(b"\x89PNG")


def test_horizon_stability_reads_the_half_horizon_from_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    found = []
    # Four trials of 20 steps, validated at steps 9 and 19 (as Lightning logs them): the
    # ranking at half horizon is the final one with the last two swapped.
    for trial, (half, full) in enumerate([(3.0, 2.0), (3.5, 2.5), (4.0, 3.5), (3.9, 3.6)]):
        folder = tmp_path / f"trial_{trial:04d}"
        with SummaryWriter(str(folder)) as writer:
            writer.add_scalar("val/loss", half, 9)
            writer.add_scalar("val/loss", full, 19)
        r = result("proxy_mup", 8, full, study_name="proxy_mup", trial=trial)
        r["hparams"]["max_steps"] = 20
        found.append({**r, "path": str(folder / "result.json")})
    assert summ.val_curve(tmp_path / "trial_0000") == {9: 3.0, 19: 2.0}
    got = summ.stability(found, "proxy_mup", steps=1000)  # each run's own max_steps wins
    assert got["n"] == 4 and got["spearman_half_full"] == pytest.approx(0.8, abs=RHO)
