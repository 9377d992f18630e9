#!/usr/bin/env bash
# Optional speed comparison (not part of the test suite or CI): Lowbit's CPU engine against llama.cpp's
# CPU backend (node-llama-cpp 3.22.1 prebuilt binaries) on the SAME GGUF files and thread count, as
# llama-bench measures: pp = prompt of $PP random tokens in one batch, tg = $TG tokens one by one.
# The files are a synthetic model of a real 1B shape (SyntheticModel.Llama1BLike, vocab 32000, seeded
# random weights) written by SpeedModel. The two engines run one after the other, never together,
# alternating for $ROUNDS rounds (default 3): this VM's memory bandwidth moves by tens of percent within
# minutes, so one run of each can land in different phases (f16 tg once came out 0.85-0.89 in three
# single-round runs and 1.15-1.46 in three tightly alternated ones). The table gives each engine's mean over
# the rounds and the median (min-max) of the per-round ratios; the 1-minute load average is recorded
# before each measurement.
#
#   bench/interop/speed.sh                    # q4_0 q8_0 q4_K f16
#   bench/interop/speed.sh q4_0               # some formats
#   WORK=/tmp/speed THREADS=2 PP=128 TG=32 REPS=3 ROUNDS=3 KEEP=1 bench/interop/speed.sh
#
# Results: $WORK/<fmt>.llama.<round>.json, $WORK/<fmt>.lowbit.<round>.json and $WORK/speed.md (markdown table).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${WORK:-/tmp/speed}"
NLC_DIR="${NLC_DIR:-/tmp/nlc}"
THREADS="${THREADS:-2}"; PP="${PP:-128}"; TG="${TG:-32}"; REPS="${REPS:-3}"; ROUNDS="${ROUNDS:-3}"
FORMATS=("$@")
[ ${#FORMATS[@]} -gt 0 ] || FORMATS=(q4_0 q8_0 q4_K f16)

mkdir -p "$WORK" "$NLC_DIR"
if [ ! -d "$NLC_DIR/node_modules/node-llama-cpp" ]; then
  cp "$HERE/package.json" "$NLC_DIR/package.json"
  (cd "$NLC_DIR" && npm install --no-audit --no-fund --ignore-scripts)
fi
cp "$HERE/speed.mjs" "$NLC_DIR/"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  dotnet build "$ROOT/src/Lowbit.Cli/Lowbit.Cli.csproj" -c Release 2>&1 | grep -E " error |Warn|Elapsed" || true
  dotnet build "$HERE/SpeedModel/SpeedModel.csproj" -c Release 2>&1 | grep -E " error |Warn|Elapsed" || true
fi
LOWBIT=(dotnet "$ROOT/src/Lowbit.Cli/bin/Release/net10.0/Lowbit.Cli.dll")
SPEEDMODEL=(dotnet "$HERE/SpeedModel/bin/Release/net10.0/SpeedModel.dll")
load1() { cut -d' ' -f1 /proc/loadavg; }

for F in "${FORMATS[@]}"; do
  GGUF="$WORK/llama1b-$F.gguf"
  echo "== $F" >&2
  [ -s "$GGUF" ] || "${SPEEDMODEL[@]}" "$F" "$GGUF" >&2
  rm -f "$WORK/$F".llama*.json "$WORK/$F".lowbit*.json
  for R in $(seq 1 "$ROUNDS"); do
    sleep "${SETTLE:-20}"   # let the load average settle (after writing the file, between engines)
    L=$(load1)
    (cd "$NLC_DIR" && node speed.mjs --model "$GGUF" --pp "$PP" --tg "$TG" --reps "$REPS" --threads "$THREADS") \
      | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const o=JSON.parse(s);o.loadBefore=+process.argv[1];console.log(JSON.stringify(o))})' "$L" \
      > "$WORK/$F.llama.$R.json"
    sleep "${SETTLE:-20}"
    L=$(load1)
    "${LOWBIT[@]}" bench "$GGUF" -p "$PP" -n "$TG" -r "$REPS" --threads "$THREADS" --no-limits --json 2>/dev/null \
      | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const o=JSON.parse(s);o.loadBefore=+process.argv[1];console.log(JSON.stringify(o))})' "$L" \
      > "$WORK/$F.lowbit.$R.json"
  done
  stat -c %s "$GGUF" > "$WORK/$F.size"
  [ "${KEEP:-0}" = 1 ] || rm -f "$GGUF"
done
node "$HERE/speed-table.mjs" "$WORK" "${FORMATS[@]}" | tee "$WORK/speed.md"
