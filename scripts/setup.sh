#!/usr/bin/env bash
# Create .venv/ and install the project and its dependencies into it.
# Without a GPU, torch's CPU build is installed first (TORCH_SPEC, default
# torch==2.13.0) so that no CUDA packages are downloaded; with a GPU (or an
# existing torch) the installed build is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" "${TORCH_SPEC:-torch}"
  else
    "${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
  fi
fi
"${PIP[@]}" -e ".[dev]"
.venv/bin/python -c "import torch, lightning, sentencepiece, sacrebleu, datasets, ctranslate2; print('torch', torch.__version__, '| lightning', lightning.__version__, '| ctranslate2', ctranslate2.__version__, '| cuda', torch.cuda.is_available())"
