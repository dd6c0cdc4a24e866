#!/usr/bin/env bash
# `make demo`: the main job on data it builds itself. Runs from the repository root with the
# project's .venv on PATH. Safe to re-run: the data is reused when complete, and every run
# starts from fresh ledgers under .demo/ (a real gate keeps its ledger for the test set's life).
set -euo pipefail

echo "== 1. Planning test-set sizes for ease.ml/ci's example conditions =="
for cond in "n - o > 0.02 +/- 0.01" "d < 0.1 +/- 0.01" "n > 0.8 +/- 0.05" "n - o > 0.02 +/- 0.01 /\\ d < 0.1 +/- 0.01"; do
  easeml-ci plan --condition "$cond" --reliability 0.9999 --adaptivity full --steps 32
  echo
done

DEMO=.demo
DATA=$DEMO/data
# The demo's key lives in its own variable so a key of yours in EASEML_TESTSET_KEY is never used.
export EASEML_DEMO_KEY_ENV=EASEML_DEMO_TESTSET_KEY
if [[ -s $DATA/key.txt && -s $DATA/testset.enc && -s $DATA/new.onnx && -s $DATA/old.onnx \
      && -s $DATA/worse.onnx && -s $DATA/pool.npz ]]; then
  echo "== 2. Reusing the demo data in $DATA (rm -rf $DATA to rebuild) =="
else
  echo "== 2. Building demo data: three scikit-learn models exported to ONNX, an encrypted test set, a pool =="
  rm -rf "$DATA"
  env -u EASEML_DEMO_TESTSET_KEY python examples/make_demo_data.py "$DATA" --key-env EASEML_DEMO_TESTSET_KEY
fi
EASEML_DEMO_TESTSET_KEY=$(cat "$DATA/key.txt")
export EASEML_DEMO_TESTSET_KEY
echo

rm -rf "$DEMO/ledger" "$DEMO/ledger-small" "$DEMO/label-requests"
cat > "$DEMO/easeml.yml" <<YAML
# The gate: the new model must beat the one in production by 2 points (to within 2 points),
# with probability of a wrong verdict at most 0.001 over 8 adaptive steps.
name: demo
condition: n - o > 0.02 +/- 0.02
reliability: 0.999
mode: fp-free
adaptivity: full
steps: 8
# paths in a config are relative to the config's own folder ($DEMO)
testset: data/testset.enc
ledger:
  path: ledger
YAML
echo "== 3. The demo gate ($DEMO/easeml.yml) and what it needs =="
cat "$DEMO/easeml.yml"
easeml-ci plan --config "$DEMO/easeml.yml"
echo

check() {  # check NEW: run the gate, print its report and exit code
  set +e
  easeml-ci check --config "$DEMO/easeml.yml" --new "$1" --old "$DATA/old.onnx" --key-env EASEML_DEMO_TESTSET_KEY
  status=$?
  set -e
  echo "(exit code $status)"
  return 0
}

echo "== 4. A pull request with a better model (MLP): expect PASS, exit 0 =="
check "$DATA/new.onnx"
[[ $status == 0 ]] || { echo "demo: expected exit 0 for the better model" >&2; exit 1; }
echo
echo "== 5. A pull request with a worse model (depth-2 tree): expect FAIL, exit 1 =="
check "$DATA/worse.onnx"
[[ $status == 1 ]] || { echo "demo: expected exit 1 for the worse model" >&2; exit 1; }
echo
echo "== 6. The budget ledger =="
easeml-ci ledger status --config "$DEMO/easeml.yml"
easeml-ci ledger log --config "$DEMO/easeml.yml"
easeml-ci ledger verify --config "$DEMO/easeml.yml"
echo

echo "== 7. Spending a small budget: 2 steps, then the new-test-set alert with a label request =="
sed -e "s|^steps: 8|steps: 2|" -e "s|path: ledger\$|path: ledger-small|" \
  "$DEMO/easeml.yml" > "$DEMO/easeml-small.yml"
echo "pool: data/pool.npz" >> "$DEMO/easeml-small.yml"
for model in worse.onnx worse.onnx new.onnx; do
  set +e
  easeml-ci check --config "$DEMO/easeml-small.yml" --new "$DATA/$model" --old "$DATA/old.onnx" \
    --key-env EASEML_DEMO_TESTSET_KEY --json > "$DEMO/last.json" 2> "$DEMO/last.err"
  status=$?
  set -e
  python - "$DEMO/last.json" "$status" "$model" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
budget = out["budget"]
print(f"{sys.argv[3]:<11} exit {sys.argv[2]}  verdict {out['verdict'] or 'refused'}  "
      f"budget {budget['used']}/{budget['total']} ({budget['status']})")
if out.get("alert"):
    print("  alert:", out["alert"]["text"].replace("\n", "\n         "))
PY
done
[[ $status == 3 ]] || { echo "demo: expected exit 3 once the budget is spent" >&2; cat "$DEMO/last.err" >&2; exit 1; }
csv=$(ls "$DEMO"/label-requests/*.csv | head -1)

echo "first rows of the label request ($csv):"
head -4 "$csv"
echo
echo "demo: done (the better model passed, the worse one failed, the ledger counted every step)"
