#!/usr/bin/env bash
# The μTransfer study's one-seed diagnostics (docs/results.md, "Why A lost"): arm A's
# stdlib recipe (seed 1) with one thing changed, each a `cli.py fit` of A's seed-1 run
# config with flags, into runs/study/diagnostics/stdlib/NAME. They choose what the 3-seed
# experiments test and decide nothing. Needs the study's arm A at 256 on stdlib
# (scripts/mutransfer_study.py run). Resumable: a finished run (NAME/done) is skipped.
#   scripts/study_diagnostics.sh run [GROUP...]    # groups below
#   scripts/study_diagnostics.sh summary            # NAME and final val/loss of every finished run
#   scripts/study_diagnostics.sh plot OUT.png       # A's recipe against width under each width rule
#   (groups in the order they ran: screen lr split width defaults alpha factor input horizon a2 readout)
# Wall time on the 2-core VM, one run at a time: width 32 ~15 s, 64 ~30 s, 128 ~1 min,
# 256 ~4-6 min (twice that beside another job).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BASE=runs/study/mutransfer/stdlib/proxy_mup.transfer/w256_seed1/config.yaml
OUT=runs/study/diagnostics/stdlib
PY=${PYTHON:-python}

# A's stdlib recipe (runs/study/mutransfer/stdlib/proxy_mup/best.yaml), read from BASE.
recipe() { "$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['model'][sys.argv[2]])" "$BASE" "$1"; }
times() { "$PY" -c "import sys; print(float(sys.argv[1]) * float(sys.argv[2]))" "$1" "$2"; }

run() {  # NAME FLAG...: one fit, skipped once NAME/done exists
  local name=$1; shift
  [ -f "$OUT/$name/done" ] && return 0
  mkdir -p "$OUT"
  if "$PY" cli.py fit --config "${RUN_BASE:-$BASE}" "$@" --trainer.logger.init_args.save_dir="$OUT" \
      --trainer.logger.init_args.name="$name" --checkpoint.dirpath="$OUT/$name" \
      --trainer.enable_progress_bar=false > "$OUT/$name.log" 2>&1; then
    touch "$OUT/$name/done"
  fi
  echo "$name: $(grep '^done:\|^error' "$OUT/$name.log" || tail -1 "$OUT/$name.log")"
}

group() {
  local lr hm om olm w a f k p
  lr=$(recipe learning_rate); hm=$(recipe hidden_lr_mult); om=$(recipe output_mult)
  olm=$(recipe output_lr_mult)
  case $1 in
  screen)  # one factor back to its default, at the proxy width and at 256
    run recipe_w32 --model.hidden_size=32
    run armD_w32 --model.hidden_size=32 --model.parametrization=sp --model.learning_rate=0.0078125 \
      --model.init_std=1 --model.output_mult=1 --model.embedding_mult=1 --model.readout_zero_init=false \
      --model.warmup_steps=20 --model.input_lr_mult=1 --model.hidden_lr_mult=1 --model.output_lr_mult=1
    for w in 32 256; do
      run "lrmults1_w$w" --model.hidden_size=$w --model.input_lr_mult=1 --model.hidden_lr_mult=1 --model.output_lr_mult=1
      run "initstd1_w$w" --model.hidden_size=$w --model.init_std=1
      run "outmult1_w$w" --model.hidden_size=$w --model.output_mult=1
      run "nozero_w$w" --model.hidden_size=$w --model.readout_zero_init=false
      run "warmup20_w$w" --model.hidden_size=$w --model.warmup_steps=20
    done ;;
  lr)  # the global learning rate times 0.5 .. 8 at 32 and 256
    for f in 4 2 8 0.5; do for w in 256 32; do
      run "lrx${f}_w$w" --model.hidden_size=$w --model.learning_rate="$(times "$lr" $f)"
    done; done ;;
  width)  # the recipe under muP and under SP at 64 and 128 (32: recipe_w32; 256: arms A, B)
    for w in 128 64; do
      run "recipe_mup_w$w" --model.hidden_size=$w
      run "recipe_sp_w$w" --model.hidden_size=$w --model.parametrization=sp
    done ;;
  split)  # SP's rule for one class only: the readout multiplier or the hidden lr, times m
    run hidden_x8 --model.hidden_lr_mult="$(times "$hm" 8)"
    run output_x8 --model.output_mult="$(times "$om" 8)"
    run readout_sp_w128 --model.hidden_size=128 --model.output_mult="$(times "$om" 4)"
    run hiddenlr_sp_w128 --model.hidden_size=128 --model.hidden_lr_mult="$(times "$hm" 4)"
    ;;
  defaults)  # arm D's settings under muP and SP at 128, an octave grid of learning rates
    for k in -7 -5 -9 -3 -6 -4 -8; do for p in mup sp; do
      run "defaults_${p}_w128_log2lr$k" --model.hidden_size=128 --model.parametrization=$p \
        --model.init_std=1 --model.output_mult=1 --model.embedding_mult=1 --model.readout_zero_init=false \
        --model.warmup_steps=20 --model.input_lr_mult=1 --model.hidden_lr_mult=1 --model.output_lr_mult=1 \
        --model.learning_rate="$("$PY" -c "print(2.0 ** $k)")"
    done; done ;;
  horizon)  # the recipe under muP and SP at 128 for 4,000 steps (cosine over the run)
    for p in mup sp; do
      run "recipe_${p}_w128_4000steps" --model.hidden_size=128 --model.parametrization=$p --trainer.max_steps=4000
    done ;;
  alpha)  # the hidden and output learning rates times m^alpha (0: muP; 1: SP's, zero-init readout)
    for spec in "128 0.5" "128 1" "128 1.5" "64 0.5" "64 1" "64 1.5" "128 2" "256 0.5" "256 1.5" "256 1"; do
      read -r w a <<< "$spec"
      f=$("$PY" -c "print(($w / 32) ** $a)")
      run "alpha${a}_w$w" --model.hidden_size=$w --model.hidden_lr_mult="$(times "$hm" "$f")" \
        --model.output_lr_mult="$(times "$olm" "$f")"
    done ;;
  factor)  # the hidden and output learning rates times f, at the proxy width and at 64
    for spec in "32 2" "32 4" "32 8" "64 4" "64 8" "32 16" "64 16"; do
      read -r w f <<< "$spec"
      run "ho_x${f}_w$w" --model.hidden_size=$w --model.hidden_lr_mult="$(times "$hm" "$f")" \
        --model.output_lr_mult="$(times "$olm" "$f")"
    done ;;
  input)  # arm D's settings at 128: muP at its best lr (2^-4) with the input class's lr cut
    # (embedding and LSTM biases), SP at its best (2^-6) with muP's input lr, the readout
    # zero-initialised in both; then A's recipe with the input lr / m under muP
    local D="--model.init_std=1 --model.output_mult=1 --model.embedding_mult=1 --model.warmup_steps=20 \
      --model.input_lr_mult=1 --model.hidden_lr_mult=1 --model.output_lr_mult=1 --model.hidden_size=128"
    # shellcheck disable=SC2086  # D is a list of flags
    {
      run defaults_mup_w128_log2lr-4_input_x0.25 $D --model.readout_zero_init=false --model.learning_rate=0.0625 --model.input_lr_mult=0.25
      run defaults_sp_w128_log2lr-6_input_x4 $D --model.readout_zero_init=false --model.parametrization=sp --model.learning_rate=0.015625 --model.input_lr_mult=4
      run defaults_mup_w128_log2lr-4_input_x0.5 $D --model.readout_zero_init=false --model.learning_rate=0.0625 --model.input_lr_mult=0.5
      run defaults_mup_w128_log2lr-4_zero $D --model.readout_zero_init=true --model.learning_rate=0.0625
      run defaults_sp_w128_log2lr-6_zero $D --model.readout_zero_init=true --model.parametrization=sp --model.learning_rate=0.015625
      run defaults_mup_w128_log2lr-4_input_x0.25_zero $D --model.readout_zero_init=true --model.learning_rate=0.0625 --model.input_lr_mult=0.25
    }
    local im; im=$(recipe input_lr_mult)
    for w in 128 64; do
      run "input_over_m_w$w" --model.hidden_size=$w --model.input_lr_mult="$(times "$im" "$("$PY" -c "print(32 / $w)")")"
    done ;;
  readout)  # what is left of muP's gap to SP at arm D's settings (128): muP made SP's twin.
    # muP's readout logits start 1/sqrt(m) = 1/2 of SP's (init std x sqrt(m), forward x 1/m);
    # output_mult sqrt(m) = 2 makes them equal, and output lr x 1/2 keeps the logits' Adam
    # step at SP's 2^-6. twin: that, with the input lr cut to SP's (x 1/4), at muP's best
    # 2^-4: only the readout bias's lr differs (2^-4, SP's 2^-6). twin_lr-6: the same
    # model at a global 2^-6, every class's lr matched to SP's (hidden x 4, output x 2):
    # SP's twin in full, the bias's lr included.
    local D="--model.init_std=1 --model.embedding_mult=1 --model.warmup_steps=20 \
      --model.hidden_size=128 --model.readout_zero_init=false --model.output_mult=2"
    # shellcheck disable=SC2086  # D is a list of flags
    {
      run twin_mup_w128 $D --model.learning_rate=0.0625 --model.input_lr_mult=0.25 \
        --model.hidden_lr_mult=1 --model.output_lr_mult=0.5
      run twin_mup_w128_lr-6 $D --model.learning_rate=0.015625 --model.input_lr_mult=1 \
        --model.hidden_lr_mult=4 --model.output_lr_mult=2
    } ;;
  a2)  # arm A2's recipe (the TPE proxy's best) against width under muP and under SP
    local RUN_BASE=runs/study/mutransfer/stdlib/proxy_mup_tpe.transfer/w256_seed1/config.yaml
    [ -f "$RUN_BASE" ] || { echo "error: $RUN_BASE is missing: run arm A2 at 256 first" >&2; exit 2; }
    for w in 32 64 128; do run "a2_mup_w$w" --model.hidden_size=$w; done
    for w in 64 128 256; do run "a2_sp_w$w" --model.hidden_size=$w --model.parametrization=sp; done ;;
  *) echo "error: unknown group $1; use screen lr split width defaults alpha factor input horizon a2 readout" >&2; exit 2 ;;
  esac
}

case ${1:-} in
run)
  [ -f "$BASE" ] || { echo "error: $BASE is missing: run arm A first (scripts/mutransfer_study.py run)" >&2; exit 2; }
  shift
  for g in "${@:-screen lr split width defaults alpha factor input horizon a2 readout}"; do for one in $g; do group "$one"; done; done ;;
summary)
  "$PY" - "$OUT" <<'PY'
import sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for run in sorted(p.parent for p in Path(sys.argv[1]).glob("*/done")):
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    last = events.Scalars("val/loss")[-1]
    print(f"{run.name:32s} step {last.step:5d}  val/loss {last.value:.4f}")
PY
  ;;
plot)
  "$PY" - "$OUT" "${2:?usage: $0 plot OUT.png}" <<'PY'
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from lstm_lightning.plots import plot_arms
out, study = Path(sys.argv[1]), Path("runs/study/mutransfer/stdlib")
def loss(name):  # a diagnostic run's final val/loss, or an arm's seed-1 run's (result.json)
    if name.endswith(".json"):
        path = study / name
        return json.loads(path.read_text())["metrics"]["val/loss"] if path.is_file() else None
    if not (out / name / "done").is_file():
        return None
    events = EventAccumulator(str(out / name), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars("val/loss")[-1].value
arm_a, arm_b = "proxy_mup.transfer/w256_seed1/result.json", "proxy_sp.transfer/w256_seed1/result.json"
lines = {  # rule -> (style, {width: run})
    "mup": (("tab:green", "o", "A's recipe, muP (arm A)"),
            {64: "recipe_mup_w64", 128: "recipe_mup_w128", 256: arm_a}),
    "x8": (("tab:blue", "s", "A's recipe, muP, hidden and output lr x 8"),
           {32: "ho_x8_w32", 64: "ho_x8_w64", 128: "alpha1.5_w128", 256: "alpha1_w256"}),
    "a1": (("tab:orange", "^", "A's recipe, hidden and output lr x m"),
           {w: f"alpha1_w{w}" for w in (64, 128, 256)}),
    "sp": (("tab:red", "v", "A's recipe, SP (arm B)"), {64: "recipe_sp_w64", 128: "recipe_sp_w128", 256: arm_b}),
    "D": (("tab:gray", "D", "D: SP defaults, lr grid at 256"),
          {256: "arm_d_w256.transfer/w256_seed1/result.json"}),
    "a2mup": (("tab:olive", "*", "A2's recipe (TPE proxy), muP (arm A2)"),
              {32: "a2_mup_w32", 64: "a2_mup_w64", 128: "a2_mup_w128",
               256: "proxy_mup_tpe.transfer/w256_seed1/result.json"}),
    "a2sp": (("tab:pink", "x", "A2's recipe, SP"),
             {32: "a2_mup_w32", 64: "a2_sp_w64", 128: "a2_sp_w128", 256: "a2_sp_w256"}),
}
rows = []
for rule, (_, runs) in lines.items():
    if rule in ("mup", "a1", "sp"):
        runs[32] = "recipe_w32"  # the proxy: every rule's model is the same at m = 1
    for width, name in sorted(runs.items()):
        value = loss(name)
        print(f"{rule:5s} {width:4d} {name:44s} {'-' if value is None else f'{value:.4f}'}")
        if value is not None:
            rows.append({"corpus": "stdlib, seed 1", "width": width, "arm": rule,
                         "n_seeds": 1, "loss_mean": value, "loss_min": value, "loss_max": value})
plot_arms(rows, sys.argv[2], styles={k: v[0] for k, v in lines.items()}, ylabel="final val/loss (nats), seed 1")
print(f"wrote {sys.argv[2]}")
PY
  ;;
*) echo "usage: $0 run [GROUP...] | summary | plot OUT.png" >&2; exit 2 ;;
esac
