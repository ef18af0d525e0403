"""result.json, declared once: its doc agrees with ``results.FIELDS``; make, write, read
and check round-trip a record, write strict JSON atomically, and name what is wrong."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from lstm_lightning import results
from lstm_lightning.results import FIELDS, ResultError

DOC = (Path(__file__).parent.parent / "docs" / "result_schema.md").read_text(encoding="utf-8")
RESULT_DOC = DOC.split("## `transfer.json`", 1)[0]  # the page's result.json part


def strict_json(text: str) -> object:
    """``text`` parsed as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def record(**fields) -> dict:
    """A valid completed record; ``fields`` replace its values."""
    hparams = dict(parametrization="mup", optimizer="adam", hidden_size=16, learning_rate=0.125,
                   seed=0, num_layers=1, batch_size=8, seq_len=16, max_steps=4,
                   base_hidden_size=16)  # fmt: skip
    base = dict(group="G", label="x", overrides={"hidden_size": 16}, config_hash="ab12",
                hparams=hparams, status="completed", metrics={"val/loss": 1.5}, steps=4,
                tokens_per_second=1000.0, wall_seconds=0.5, world_size=1)  # fmt: skip
    return results.make(**(base | fields))


# --- the doc --------------------------------------------------------------------------


def test_the_doc_lists_every_field_once_in_order():
    documented = re.findall(r"^- `(\w+)`:", RESULT_DOC, flags=re.M)
    assert documented == list(FIELDS)


def test_the_docs_example_is_a_valid_current_record():
    example = strict_json(re.search(r"```json\n(.*?)\n```", RESULT_DOC, flags=re.S)[1])
    results.check(example)
    assert example["schema"] == results.SCHEMA
    assert list(example) == list(FIELDS)
    assert list(example["hparams"]) == list(results.HPARAMS)
    assert list(example["metrics"]) == list(results.METRICS)


# --- make, write, read ----------------------------------------------------------------


def test_make_fills_every_field_in_schema_order():
    made = results.make(group="G")
    assert list(made) == list(FIELDS) and made["schema"] == results.SCHEMA
    assert made["metrics"] == dict.fromkeys(results.METRICS)
    assert made["error"] is None and made["worker_death"] is None


def test_round_trip(tmp_path):
    original = record(resumed_from_step=2, metrics={"val/loss": 1.5, "train/loss": 1.75})
    path = results.write(tmp_path, original)
    assert path == tmp_path / results.FILE
    assert results.read(path) == original
    assert strict_json(path.read_text(encoding="utf-8")) == original


def test_nan_and_inf_are_written_as_null(tmp_path):
    loud = record(status="diverged", metrics={"train/loss": math.nan, "val/loss": math.inf},
                  tokens_per_second=-math.inf, diverged_at_step=3)  # fmt: skip
    path = results.write(tmp_path, loud)
    written = strict_json(path.read_text(encoding="utf-8"))
    assert written["metrics"]["train/loss"] is None and written["metrics"]["val/loss"] is None
    assert written["tokens_per_second"] is None
    assert results.read(path) == written
    assert "NaN" not in results.dumps(loud) and "Infinity" not in results.dumps(loud)


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"stauts": "completed"}, "stauts"),
        ({"metrics": {"val/los": 1.0}}, "val/los"),
    ],
)
def test_make_refuses_an_unknown_field(fields, named):
    with pytest.raises(ResultError, match=f"unknown .*{named}"):
        results.make(**fields)


@pytest.mark.parametrize(
    "where, key", [(None, "extra"), ("hparams", "widht"), ("metrics", "val/acc")]
)
def test_check_refuses_an_unknown_field(where, key):
    bad = record()
    (bad if where is None else bad[where])[key] = 1
    with pytest.raises(ResultError, match=f"unknown {where or 'result'} field.*{key}"):
        results.check(bad)


# A value of the wrong JSON type for every field.
WRONG = {
    "schema": 3, "group": 1, "label": None, "overrides": [], "config_hash": 7, "hparams": "x",
    "status": "running", "metrics": None, "steps": "4", "tokens_per_second": "fast",
    "wall_seconds": [], "diverged_at_step": 1.5, "resumed_from_step": "2", "world_size": True,
    "threads": 1.5, "core_seconds": "1", "error": 1, "worker_death": 9, "study": 3,
    "trial": "0",
}  # fmt: skip


def test_every_field_has_a_wrong_value_to_try():
    assert list(WRONG) == list(FIELDS)


@pytest.mark.parametrize("key", list(FIELDS))
def test_each_broken_field_is_named(key):
    with pytest.raises(ResultError, match=re.escape(key)):
        results.check(record() | {key: WRONG[key]})


@pytest.mark.parametrize("key", [k for k in FIELDS if k != "schema"])
def test_each_missing_field_is_named(key):
    bad = record()
    del bad[key]
    with pytest.raises(ResultError, match=f"^{re.escape(key)} is missing$"):
        results.check(bad)


@pytest.mark.parametrize(
    "hparams, named",
    [
        ({"seed": None}, "hparams lacks seed"),
        ({"hidden_size": 0}, "hparams.hidden_size 0 is not a positive integer"),
        ({"hidden_size": 16.5}, "hparams.hidden_size 16.5 is not a positive integer"),
        ({"learning_rate": "0.1"}, "hparams.learning_rate '0.1' is not a positive number"),
        ({"learning_rate": -1.0}, "hparams.learning_rate -1.0 is not a positive number"),
    ],
)
def test_each_broken_hparam_is_named(hparams, named):
    bad = record()
    bad["hparams"] |= hparams
    with pytest.raises(ResultError, match=f"^{re.escape(named)}$"):
        results.check(bad)


def test_a_broken_metric_is_named():
    with pytest.raises(ResultError, match="^metrics.val/loss 'low' is neither"):
        results.check(record(metrics={"val/loss": "low"}))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[1, 2]", "expected a JSON object, got a list"),
        (b'{"schema": true}', "schema is True; this version reads schema 1 or 2"),
    ],
)
def test_read_names_an_unreadable_file(tmp_path, content, problem):
    path = tmp_path / results.FILE
    path.write_bytes(content)
    with pytest.raises(ResultError, match=re.escape(problem)):
        results.read(path)
    with pytest.raises(ResultError, match="cannot read it"):
        results.read(tmp_path / "missing" / results.FILE)


# --- schema 1 -------------------------------------------------------------------------


def schema_1(**fields) -> dict:
    """A record as schema 1 wrote it: no worker_death, NaN literals allowed."""
    old = record(**fields) | {"schema": 1}
    del old["worker_death"]
    return old


@pytest.mark.parametrize("with_resume", [True, False])
def test_a_schema_1_file_is_still_read(tmp_path, with_resume):
    old = schema_1(metrics={"val/loss": math.nan})
    if not with_resume:  # schema 1's doc did not list it
        del old["resumed_from_step"]
    path = tmp_path / results.FILE
    path.write_text(json.dumps(old), encoding="utf-8")  # json.dumps writes NaN as NaN
    assert "NaN" in path.read_text(encoding="utf-8")
    read = results.read(path)
    assert list(read) == list(FIELDS) and read["schema"] == 1
    assert read["metrics"]["val/loss"] is None and read["resumed_from_step"] is None
    assert read["worker_death"] is None


def test_a_schema_1_worker_death_becomes_the_field(tmp_path):
    error = "worker died with signal 9 (SIGKILL); --retry_failed resumes it"
    path = tmp_path / results.FILE
    path.write_text(json.dumps(schema_1(status="failed", error=error)), encoding="utf-8")
    read = results.read(path)
    assert (read["worker_death"], read["error"]) == ("worker died with signal 9 (SIGKILL)", error)
    own = schema_1(status="failed", error="RuntimeError: worker died")  # the run's own error
    path.write_text(json.dumps(own), encoding="utf-8")
    assert results.read(path)["error"] == "RuntimeError: worker died"
    assert results.read(path)["worker_death"] is None


def test_schema_2_requires_its_fields():
    bad = record()
    del bad["worker_death"]
    with pytest.raises(ResultError, match="^worker_death is missing$"):
        results.check(bad)


# --- atomic write ---------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = results.write(tmp_path, record(label="old"))

    def replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        results.write(tmp_path, record(label="new"))
    assert results.read(path)["label"] == "old"
    assert os.listdir(tmp_path) == [results.FILE]


def test_an_invalid_record_is_not_written(tmp_path):
    with pytest.raises(ResultError, match="status"):
        results.write(tmp_path, record(status="running"))
    assert os.listdir(tmp_path) == []
