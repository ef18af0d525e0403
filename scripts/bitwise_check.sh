#!/usr/bin/env bash
# Bit-for-bit check across a refactor: two fixed fits (K auto, muP Adam; K = 1, SP SGD with
# contiguous TBPTT) and a 2-run sweep, printing their losses at full precision. Run it on
# the old and the new commit and diff the outputs: they must be identical on one machine.
#   scripts/bitwise_check.sh /tmp/before > before.txt  (on the old commit), same for after
set -e
OUT=${1:?out dir}
rm -rf "$OUT"; mkdir -p "$OUT"
export OMP_NUM_THREADS=1
python cli.py fit --config configs/lstm.yaml --trainer.max_steps 200 --trainer.val_check_interval 100 --model.hidden_size 64 --trainer.logger.init_args.save_dir "$OUT/runs" --trainer.enable_progress_bar false > "$OUT/fit1.log" 2>&1
python cli.py fit --config configs/lstm.yaml --trainer.max_steps 120 --trainer.val_check_interval 60 --model.hidden_size 32 --model.parametrization sp --model.optimizer sgd --model.learning_rate 0.5 --data.batching contiguous --data.steps_per_batch 1 --trainer.logger.init_args.save_dir "$OUT/runs2" --trainer.enable_progress_bar false > "$OUT/fit2.log" 2>&1
python - "$OUT" <<'PY'
import sys, glob
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = sys.argv[1]
for d in sorted(glob.glob(f"{out}/runs*/lstm/version_*")):
    ea = EventAccumulator(d); ea.Reload()
    for tag in ("train/loss", "val/loss"):
        print(d.split('/')[-3], tag, [(e.step, repr(e.value)) for e in ea.Scalars(tag)][-3:])
PY
python cli.py sweep --labels lstm_16d_sgd_mup_lr0.5,lstm_32d_sgd_mup_lr2 --runs_dir "$OUT/sweep" --workers 1 > "$OUT/sweep.log" 2>&1
python - "$OUT" <<'PY'
import sys, glob, json
for p in sorted(glob.glob(f"{sys.argv[1]}/sweep/*/*/result.json")):
    r = json.load(open(p)); print(r["label"], r["status"], r["steps"], {k: repr(v) for k, v in r["metrics"].items()})
PY
