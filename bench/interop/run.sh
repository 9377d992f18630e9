#!/usr/bin/env bash
# Optional interop check (not part of the test suite or CI): writes GGUF files with Lowbit, loads
# and runs each one in llama.cpp (node-llama-cpp 3.22.1 prebuilt CPU binaries) and compares with
# Lowbit's engine on the same file. Needs .NET 10, Node >= 20 and npm registry access (first run).
#
#   bench/interop/run.sh                 # all formats
#   bench/interop/run.sh Q4_0 Q6_K       # some formats
#   WORK=/tmp/lb-interop NLC_DIR=/tmp/nlc CHUNKS=4 CTX=256 TOKENS=32 bench/interop/run.sh
#   REUSE=1 bench/interop/run.sh         # keep existing GGUF files and llama.cpp measurements in $WORK
#
# Results: $WORK/<MIX>.json per format and $WORK/results.md (markdown table).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${WORK:-/tmp/lb-interop}"
NLC_DIR="${NLC_DIR:-/tmp/nlc}"          # node-llama-cpp is installed here, outside the repository
PROMPT="${PROMPT:-The Python interpreter}"
TOKENS="${TOKENS:-32}"
CHUNKS="${CHUNKS:-4}"
CTX="${CTX:-256}"
THREADS="${THREADS:-2}"
TEXT="${TEXT:-$ROOT/data/wikitext-2-raw/wiki.test.full.raw}"
MODEL="${MODEL:-$ROOT/models/refmodel-llama-6m}"
MIXES=("$@")
[ ${#MIXES[@]} -gt 0 ] || MIXES=(F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_M Q4_K_S Q4_K_M Q5_K_M Q6_K IQ4_NL IQ4_XS MXFP4)

mkdir -p "$WORK" "$NLC_DIR"
if [ ! -d "$NLC_DIR/node_modules/node-llama-cpp" ]; then
  cp "$HERE/package.json" "$NLC_DIR/package.json"
  (cd "$NLC_DIR" && npm install --no-audit --no-fund --ignore-scripts)
fi
cp "$HERE/llama-check.mjs" "$HERE/summarize.mjs" "$NLC_DIR/"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  dotnet build "$ROOT/Lowbit.slnx" -c Release 2>&1 | grep -E " error |Warn|Elapsed" || true
  dotnet build "$HERE/InteropKld/InteropKld.csproj" -c Release 2>&1 | grep -E " error |Warn|Elapsed" || true
fi
LOWBIT=(dotnet "$ROOT/src/Lowbit.Cli/bin/Release/net10.0/Lowbit.Cli.dll")
INTEROP=(dotnet "$HERE/InteropKld/bin/Release/net10.0/InteropKld.dll")

for MIX in "${MIXES[@]}"; do
  GGUF="$WORK/lb-$MIX.gguf"
  echo "== $MIX" >&2
  [ "${REUSE:-0}" = 1 ] && [ -s "$GGUF" ] || "${LOWBIT[@]}" quantize "$MODEL" -f "$MIX" -o "$GGUF" > "$WORK/$MIX.quantize.log" 2>&1
  # Lowbit greedy continuation: stdout is the prompt, the generated text and a newline.
  "${LOWBIT[@]}" generate "$GGUF" -p "$PROMPT" -n "$TOKENS" --temp 0 -t "$THREADS" 2>/dev/null > "$WORK/$MIX.lowbit-gen.raw"
  node -e 'const fs=require("fs");const [raw,p,out]=process.argv.slice(1);let s=fs.readFileSync(raw,"utf8");
    if(!s.startsWith(p)) throw new Error("lowbit output does not start with the prompt");
    fs.writeFileSync(out, s.slice(p.length).replace(/\n$/,""));' "$WORK/$MIX.lowbit-gen.raw" "$PROMPT" "$WORK/$MIX.lowbit-gen.txt"
  "${LOWBIT[@]}" perplexity "$GGUF" -f "$TEXT" --chunks "$CHUNKS" -c "$CTX" -t "$THREADS" --json 2>/dev/null > "$WORK/$MIX.lowbit-ppl.json"
  if [ "${REUSE:-0}" = 1 ] && [ -s "$WORK/$MIX.llama.json" ] && [ -f "$WORK/$MIX.llama.lbp" ]; then
    # llama.cpp side already measured on this file (REUSE=1): add only what is missing.
    [ -s "$WORK/$MIX.llama-bos.txt" ] || (cd "$NLC_DIR" && node llama-check.mjs --model "$GGUF" --ctx "$CTX" \
      --threads "$THREADS" --bos-logits "$WORK/$MIX.llama-bos.txt") > /dev/null
  else
    rm -f "$WORK/$MIX.llama.lbp" "$WORK/$MIX.llama-bos.txt"
    (cd "$NLC_DIR" && node llama-check.mjs --model "$GGUF" --prompt "$PROMPT" --tokens "$TOKENS" --text "$TEXT" \
        --chunks "$CHUNKS" --ctx "$CTX" --threads "$THREADS" --lowbit-text "$WORK/$MIX.lowbit-gen.txt" \
        --save-logprobs "$WORK/$MIX.llama.lbp" --bos-logits "$WORK/$MIX.llama-bos.txt") > "$WORK/$MIX.llama.json"
  fi
  # Lowbit's engine against llama.cpp's log-probabilities on the token ids llama.cpp evaluated
  # (lowbit kld also checks that its own tokenization of the text gives the same ids).
  if [ -f "$WORK/$MIX.llama.lbp" ]; then
    "${LOWBIT[@]}" kld "$GGUF" "$GGUF" --base-logprobs "$WORK/$MIX.llama.lbp" -f "$TEXT" --chunks "$CHUNKS" -c "$CTX" \
      -t "$THREADS" --json 2>/dev/null > "$WORK/$MIX.kld.json" || echo '{}' > "$WORK/$MIX.kld.json"
    # Same comparison with the engine settings that reproduce llama.cpp's CPU arithmetic
    # (activations quantized in prefill too, F16 KV cache), and the logits after BOS alone.
    "${INTEROP[@]}" "$GGUF" "$WORK/$MIX.llama.lbp" "$THREADS" > "$WORK/$MIX.faithful.json" || echo '{}' > "$WORK/$MIX.faithful.json"
    "${INTEROP[@]}" logits "$GGUF" 1 "$WORK/$MIX.llama-bos.txt" > "$WORK/$MIX.bos.json" || echo '{}' > "$WORK/$MIX.bos.json"
  else
    echo '{}' | tee "$WORK/$MIX.kld.json" "$WORK/$MIX.faithful.json" > "$WORK/$MIX.bos.json"
  fi
done
(cd "$NLC_DIR" && node summarize.mjs "$WORK" "${MIXES[@]}") | tee "$WORK/results.md"
