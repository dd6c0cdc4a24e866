#!/usr/bin/env bash
# `make demo`: the main job on built-in example data. Runs from the repository root with the
# project's .venv on PATH.
set -euo pipefail
echo "== Planning test-set sizes for ease.ml/ci's example conditions =="
for cond in "n - o > 0.02 +/- 0.01" "d < 0.1 +/- 0.01" "n > 0.8 +/- 0.05" "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"; do
  easeml-ci plan --condition "$cond" --reliability 0.9999 --adaptivity full --steps 32
  echo
done
