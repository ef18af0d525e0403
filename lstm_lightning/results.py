"""``result.json``: one run's outcome, declared once. The runner writes it, the report reads it.

``FIELDS`` is the schema: every top-level key, in the order written, with the JSON types
it may hold and one line of meaning. ``docs/result_schema.md`` documents the same keys (a
test checks they agree). ``make`` builds a record, ``write`` checks it and writes it
atomically as strict JSON (a NaN or infinite number becomes ``null``), and ``read``
parses and checks one file, raising ``ResultError`` that says what is wrong.

Schema 2 added ``resumed_from_step`` to the docs and ``worker_death``, a field where
schema 1 put a prefix in ``error``. Files of schema 1 are still read: ``read`` returns
them with every field (``schema`` stays 1), ``resumed_from_step`` null where absent, and
``worker_death`` read from a failed run's ``error`` that starts with ``worker died``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lstm_lightning.files import write_atomic

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
FILE = "result.json"
STATUSES = ("completed", "diverged", "failed")
METRICS = ("train/loss", "val/loss", "val/loss_best", "val/loss_floor")
# The hyperparameters a result records (by sweep alias), in the report's column order.
HPARAMS = (
    "parametrization",
    "optimizer",
    "hidden_size",
    "learning_rate",
    "seed",
    "num_layers",
    "batch_size",
    "seq_len",
    "max_steps",
    "base_hidden_size",
)
REQUIRED_HPARAMS = HPARAMS[:5]  # what the report cannot do without
# Fields a schema 1 file may lack: worker_death is new; resumed_from_step was written but
# not documented, so a file made by the schema 1 doc has none.
SCHEMA_2_ONLY = ("resumed_from_step", "worker_death", "threads", "core_seconds", "study", "trial")
SCHEMA_1_DEATH = "worker died"  # schema 1's prefix of ``error`` for a worker's death

NUMBER, INT, STR, OBJ, NULL = "number", "integer", "string", "object", "null"
# key -> (JSON types it may hold, meaning). The order is the order written.
FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "schema": ((INT,), "the schema version, 2 (1 is still read)"),
    "group": ((STR,), "the experiment group"),
    "label": ((STR,), "the sub-experiment label"),
    "overrides": ((OBJ,), "the sub-experiment's overrides, as given"),
    "config_hash": ((STR,), "sha256 of what determines the run's result in config.yaml"),
    "hparams": ((OBJ,), "the resolved values of the HPARAMS keys"),
    "status": ((STR,), "completed, diverged or failed"),
    "metrics": ((OBJ,), "the final METRICS; null where never logged"),
    "steps": ((INT, NULL), "optimizer steps taken"),
    "tokens_per_second": ((NUMBER, NULL), "training tokens per wall second (this attempt)"),
    "wall_seconds": ((NUMBER, NULL), "wall time of this attempt"),
    "diverged_at_step": ((INT, NULL), "the step whose loss diverged, or null"),
    "resumed_from_step": ((INT, NULL), "the checkpoint step this attempt resumed from"),
    "world_size": ((INT, NULL), "processes that trained it (DDP)"),
    "threads": ((INT, NULL), "torch threads of each process in this attempt"),
    "core_seconds": (
        (NUMBER, NULL),
        "the run's compute: wall x threads x processes, earlier attempts up to the checkpoint it resumed from included",
    ),
    "error": ((STR, NULL), "a failed run's one-line error"),
    "worker_death": ((STR, NULL), "how the worker process died under a failed run"),
    "study": ((STR, NULL), "the search (cli.py tune) this run is a trial of, or null"),
    "trial": ((INT, NULL), "its trial number in that study, or null"),
}


class ResultError(ValueError):
    """A result.json that cannot be read or breaks the schema; the message says why."""


def make(**fields: Any) -> dict:
    """A complete record in schema order: the fields given, ``schema``, and null elsewhere.

    ``metrics`` defaults to every metric null. Raises ``ResultError`` for an unknown field.
    """
    _refuse_unknown("result", fields, FIELDS)
    record = {key: None for key in FIELDS} | {"schema": SCHEMA, "metrics": {}} | fields
    if isinstance(record["metrics"], dict):
        _refuse_unknown("metrics", record["metrics"], METRICS)
        record["metrics"] = {name: record["metrics"].get(name) for name in METRICS}
    return {key: record[key] for key in FIELDS}


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float, however deep, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(result: dict) -> str:
    """Strict JSON text of a record (NaN and infinities as null)."""
    return json.dumps(finite(result), indent=2, allow_nan=False) + "\n"


def write(run_dir: str | os.PathLike, result: dict) -> Path:
    """Check ``result`` and write it to ``run_dir/result.json`` atomically; its path."""
    result = finite(result)
    check(result)
    path = Path(run_dir) / FILE
    write_atomic(path, dumps(result))
    return path


def read(path: str | os.PathLike) -> dict:
    """Parse and check one result.json; ``ResultError`` says what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ResultError(f"cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ResultError(f"not UTF-8 text ({err})") from None
    try:
        result = json.loads(text)
    except ValueError as err:
        raise ResultError(f"not valid JSON ({err})") from None
    result = finite(result)  # schema 1 wrote NaN and Infinity literals where it meant null
    check(result)
    return upgrade(result)


def upgrade(result: dict) -> dict:
    """A checked schema 1 record with schema 2's fields (its ``schema`` stays 1)."""
    if result["schema"] != 1:
        return result
    result = {key: result.get(key) for key in FIELDS}
    error = result["error"] or ""
    if result["status"] == "failed" and error.startswith(SCHEMA_1_DEATH):
        result["worker_death"] = error.split("; ")[0]  # "worker died ...; --retry_failed ..."
    return result


def check(result: object) -> None:
    """Raise ``ResultError`` unless ``result`` holds every field with a value of its type."""
    if not isinstance(result, dict):
        raise ResultError(f"expected a JSON object, got a {type(result).__name__}")
    schema = result.get("schema")
    if json_type(schema) != INT or schema not in READABLE_SCHEMAS:
        raise ResultError(
            f"schema is {schema!r}; this version reads schema "
            f"{' or '.join(map(str, READABLE_SCHEMAS))}"
        )
    _refuse_unknown("result", result, FIELDS)
    for key, (types, _) in FIELDS.items():
        if key not in result and result["schema"] == 1 and key in SCHEMA_2_ONLY:
            continue
        if key not in result:
            raise ResultError(f"{key} is missing")
        if not fits(result[key], types):
            raise ResultError(f"{key} is {result[key]!r}; expected {' or '.join(types)}")
    if result["status"] not in STATUSES:
        raise ResultError(f"status {result['status']!r} is not one of {', '.join(STATUSES)}")
    _refuse_unknown("hparams", result["hparams"], HPARAMS)
    _check_hparams(result["hparams"])
    _refuse_unknown("metrics", result["metrics"], METRICS)
    for key, value in result["metrics"].items():
        if not fits(value, (NUMBER, NULL)):
            raise ResultError(f"metrics.{key} {value!r} is neither a number nor null")


def _refuse_unknown(where: str, record: dict, known: tuple[str, ...] | dict) -> None:
    unknown = sorted(set(record) - set(known))
    if unknown:
        raise ResultError(
            f"unknown {where} field(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}"
        )


def _check_hparams(hparams: dict) -> None:
    missing = [key for key in REQUIRED_HPARAMS if hparams.get(key) is None]
    if missing:
        raise ResultError(f"hparams lacks {', '.join(missing)}")
    width, lr = hparams["hidden_size"], hparams["learning_rate"]
    if json_type(width) != INT or width <= 0:
        raise ResultError(f"hparams.hidden_size {width!r} is not a positive integer")
    if not fits(lr, (NUMBER,)) or not (lr > 0 and math.isfinite(lr)):
        raise ResultError(f"hparams.learning_rate {lr!r} is not a positive number")


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value; a whole float such as 16.0 counts as integer."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return INT
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STR
    return OBJ if isinstance(value, dict) else "array" if isinstance(value, list) else "other"


def fits(value: Any, types: tuple[str, ...]) -> bool:
    """Whether ``value`` has one of the JSON ``types`` (an integer is a number too)."""
    kind = json_type(value)
    return kind in types or (kind == INT and NUMBER in types)
