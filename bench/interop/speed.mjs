// llama-bench-style speed of one GGUF file in llama.cpp's CPU backend (node-llama-cpp's prebuilt
// binaries), measured the way Lowbit's `lowbit bench` measures its own engine (src/Lowbit/Engine/Bench.cs):
//   pp: a prompt of --pp random token ids evaluated as one batch from an empty cache, logits computed
//       for the last position only (what llama-bench's llama_batch_get_one does);
//   tg: --tg single-token steps from an empty cache, each computing the logits and feeding back the
//       argmax (llama.cpp returns only the max logit to JavaScript, so the 32000-entry vocabulary is
//       not copied into a JS Map per step).
// One warm-up run of each test, then --reps timed runs; reports mean ± sample std dev and best, in tokens/s.
// Output: one JSON object on stdout.
//
// usage: node speed.mjs --model F.gguf [--pp 128] [--tg 32] [--reps 3] [--threads 2] [--seed 42]
import {getLlama} from "node-llama-cpp";

function parseArgs(argv) {
    const a = {pp: 128, tg: 32, reps: 3, threads: 2, seed: 42};
    for (let i = 0; i < argv.length; i += 2) {
        if (argv[i + 1] === undefined) throw new Error(`missing value for ${argv[i]}`);
        a[argv[i].replace(/^--/, "")] = argv[i + 1];
    }
    for (const k of ["pp", "tg", "reps", "threads", "seed"]) a[k] = Number(a[k]);
    if (!a.model) throw new Error("--model is required");
    return a;
}

/** Small seeded generator (mulberry32) so that the prompt is the same on every run. */
function rng(seed) {
    let s = seed >>> 0;
    return () => {
        s = (s + 0x6D2B79F5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

function stats(samples) {
    const mean = samples.reduce((s, v) => s + v, 0) / samples.length;
    const sd = samples.length > 1 ? Math.sqrt(samples.reduce((s, v) => s + (v - mean) ** 2, 0) / (samples.length - 1)) : 0;
    return {mean, stdDev: sd, best: Math.max(...samples), samples};
}

// Ask for the logits of the position but copy only the max one back to JavaScript.
const onlyMax = {generateNext: {logits: {filter: {tokens: [], includeMax: true}}}};

const args = parseArgs(process.argv.slice(2));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: args.model, gpuLayers: 0});
const vocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
const ctx = Math.max(256, args.pp + 1, args.tg + 1);
const context = await model.createContext({contextSize: ctx, batchSize: ctx, sequences: 1, threads: args.threads});
const seq = context.getSequence();
const next = rng(args.seed);
const prompt = Array.from({length: args.pp}, () => Math.floor(next() * vocab));

const pp = [], tg = [];
for (let r = -1; r < args.reps; r++) {
    await seq.clearHistory();
    const items = prompt.map((t, i) => i === prompt.length - 1 ? [t, onlyMax] : t);
    const t0 = process.hrtime.bigint();
    const res = await seq.controlledEvaluate(items);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (!res[prompt.length - 1]?.next?.logits) throw new Error("no logits for the last prompt position");
    if (r >= 0) pp.push(args.pp / s);
}
for (let r = -1; r < args.reps; r++) {
    await seq.clearHistory();
    let token = Math.floor(next() * vocab);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < args.tg; i++) {
        const res = await seq.controlledEvaluate([[token, onlyMax]]);
        let best = -Infinity;
        for (const [t, v] of res[0].next.logits) if (v > best) { best = v; token = t; }
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r >= 0) tg.push(args.tg / s);
}
seq.dispose();
await context.dispose();
await model.dispose();
console.log(JSON.stringify({model: args.model, threads: args.threads, contextSize: ctx, pp: args.pp, tg: args.tg,
    ppTokensPerSecond: stats(pp), tgTokensPerSecond: stats(tg)}));
