#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up .venv, train the
# en->de Transformer on Multi30k (CONFIG, default configs/multi30k_cpu.yaml),
# average the last kept checkpoints (AVERAGE_LAST, default 4; several counts
# such as "10 20" make one average each), choose the checkpoint (best or an
# average) and decoding (greedy or beam 5 with each length penalty in LENPENS,
# default 1.6, normalized as each of LENPEN_NORMS, default gnmt; "gnmt fairseq"
# tries both) on the validation split, evaluate that choice on test_2016_flickr
# (cased sacreBLEU + chrF, and the papers' tokenized BLEU), and translate a few
# example sentences with it. SEED=N trains with seed N (weights, dropout and
# batch order) in runs/<config>_seedN.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/multi30k_cpu.yaml}
SEED=${SEED:-}
SEED_ARGS=()
if [ -n "$SEED" ]; then
  SEED_ARGS=(--seed_everything "$SEED" --data.seed "$SEED")
fi
RUN_DIR=${RUN_DIR:-runs/$(basename "$CONFIG" .yaml)${SEED:+_seed$SEED}}
AVERAGE_LAST=${AVERAGE_LAST:-4}
LENPENS=${LENPENS:-1.6}
LENPEN_NORMS=${LENPEN_NORMS:-gnmt}
bash scripts/setup.sh
PY=.venv/bin/python
start=$(date +%s)
$PY scripts/train.py fit --config "$CONFIG" --trainer.default_root_dir "$RUN_DIR" "${SEED_ARGS[@]}"
trained=$(date +%s)
CKPTS=("$RUN_DIR/checkpoints/best.ckpt")
# The config's kept checkpoints: every 50 updates (multi30k_cpu) or every epoch (multi30k_tiny).
for kept in "$RUN_DIR/checkpoints/updates" "$RUN_DIR/checkpoints/epochs"; do
  if [ -d "$kept" ]; then
    read -r -a counts <<< "$AVERAGE_LAST"
    for n in "${counts[@]}"; do
      out="$RUN_DIR/checkpoints/averaged.ckpt"
      [ "${#counts[@]}" -gt 1 ] && out="$RUN_DIR/checkpoints/averaged_last$n.ckpt"
      $PY scripts/average_checkpoints.py --folder "$kept" --last "$n" --out "$out"
      CKPTS+=("$out")
    done
    break
  fi
done
# shellcheck disable=SC2086
$PY scripts/evaluate.py --ckpt "${CKPTS[@]}" --beam 1 5 --lenpen $LENPENS \
  --lenpen-norm $LENPEN_NORMS --select-on val --out "$RUN_DIR/eval"
done_eval=$(date +%s)
read -r CHOSEN BEAM LENPEN NORM < <($PY -c "import json; s = json.load(open('$RUN_DIR/eval/selected.json')); print(s['checkpoint'], s['beam'], s['lenpen'], s.get('lenpen_norm') or 'gnmt')")
echo
echo "Example translations ($CHOSEN, beam $BEAM):"
$PY scripts/translate.py --ckpt "$CHOSEN" --beam "$BEAM" --lenpen "$LENPEN" --lenpen-norm "$NORM" \
  "A man in an orange hat starring at something." \
  "Two dogs are playing in the snow." \
  "A little girl is climbing a tree."
echo
echo "wall time: training $((trained - start)) s, averaging + choice on val + test evaluation" \
     "$((done_eval - trained)) s, total $((done_eval - start)) s"
