#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up .venv, train the
# en->de Transformer on Multi30k (CONFIG, default configs/multi30k_cpu.yaml),
# evaluate the best checkpoint on test_2016_flickr with sacreBLEU, and
# translate a few example sentences.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/multi30k_cpu.yaml}
RUN_DIR=${RUN_DIR:-runs/$(basename "$CONFIG" .yaml)}
bash scripts/setup.sh
PY=.venv/bin/python
start=$(date +%s)
$PY scripts/train.py fit --config "$CONFIG"
trained=$(date +%s)
$PY scripts/evaluate.py --ckpt "$RUN_DIR/checkpoints/best.ckpt"
done_eval=$(date +%s)
echo
echo "Example translations:"
$PY scripts/translate.py --ckpt "$RUN_DIR/checkpoints/best.ckpt" \
  "A man in an orange hat starring at something." \
  "Two dogs are playing in the snow." \
  "A little girl is climbing a tree."
echo
echo "wall time: training $((trained - start)) s, test evaluation $((done_eval - trained)) s," \
     "total $((done_eval - start)) s"
