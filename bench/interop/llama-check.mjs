// Loads one GGUF file in llama.cpp (through node-llama-cpp's prebuilt binaries) and measures:
//   1. whether it loads (and llama.cpp's error if not);
//   2. a greedy continuation of a prompt (argmax over llama.cpp's raw logits, no penalties);
//   3. llama-perplexity-style perplexity over the first chunks of a text (BOS-prefixed token
//      stream, non-overlapping chunks of ctx tokens, each chunk's first token replaced by BOS and
//      run from an empty cache, only the second half scored);
//   4. optionally the logits after the single token BOS (comma-separated text);
//   5. optionally llama.cpp's log-probabilities of those scored positions in Lowbit's
//      LogProbFile layout ("LBLOGPRB", src/Lowbit/Eval/LogProbFile.cs), so that
//      `lowbit kld <same file> --base-logprobs` measures how far Lowbit's engine is from llama.cpp
//      on exactly the token ids llama.cpp evaluated (and fails loudly if Lowbit tokenizes the text
//      differently).
// Output: one JSON object on stdout.
//
// usage: node llama-check.mjs --model F.gguf --prompt "..." --tokens 32 --text wiki.raw --chunks 4 --ctx 256
//                             [--lowbit-text gen.txt] [--save-logprobs out.lbp] [--bos-logits out.txt] [--threads 2]
// (every measurement is optional: give only --model and --bos-logits to get just those logits)
import {getLlama} from "node-llama-cpp";
import fs from "node:fs";

function parseArgs(argv) {
    const a = {tokens: 32, chunks: 4, ctx: 256, threads: 2};
    for (let i = 0; i < argv.length; i += 2) {
        const k = argv[i].replace(/^--/, "");
        if (argv[i + 1] === undefined) throw new Error(`missing value for ${argv[i]}`);
        a[k.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = argv[i + 1];
    }
    for (const k of ["tokens", "chunks", "ctx", "threads"]) a[k] = Number(a[k]);
    if (!a.model) throw new Error("--model is required");
    return a;
}

/** Full logits map (token → logit) → Float32Array indexed by token id. */
function logitsArray(map, vocab) {
    if (map.size !== vocab) throw new Error(`expected ${vocab} logits, got ${map.size}`);
    const out = new Float32Array(vocab);
    for (const [t, v] of map) out[t] = v;
    return out;
}

/** Lowest id among the maximal logits (Lowbit's Sampler.ArgMax picks the first maximum too). */
function argMax(l) {
    let best = 0;
    for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
    return best;
}

function logSoftmaxNormalizer(l) {
    let max = -Infinity;
    for (const v of l) if (v > max) max = v;
    let sum = 0;
    for (const v of l) sum += Math.exp(v - max);
    return {max, lse: Math.log(sum)};
}

/** One LogProbFile row: float32 scale, float32 minLogProb, vocab uint16 (padded to even). */
function encodeRow(l, vocab) {
    const rowValues = 2 * Math.floor((vocab + 1) / 2) + 4;
    const buf = Buffer.alloc(2 * rowValues);
    const {max, lse} = logSoftmaxNormalizer(l);
    let min = Infinity;
    for (const v of l) if (v < min) min = v;
    min = Math.fround(Math.max(min, max - 16));
    const scale = Math.fround((max - min) / 65535);
    buf.writeFloatLE(scale, 0);
    buf.writeFloatLE(Math.fround(min - max - lse), 4);
    if (scale > 0) {
        const inv = 1 / scale;
        for (let i = 0; i < vocab; i++) {
            if (!(l[i] > min)) continue;
            const x = inv * (l[i] - min);
            let r = Math.round(x);
            if (Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0) r -= 1; // round half to even
            buf.writeUInt16LE(Math.min(65535, Math.max(0, r)), 8 + 2 * i);
        }
    }
    return buf;
}

async function greedy(model, seq, prompt, n, vocab) {
    await seq.clearHistory();
    const input = [model.tokens.bos, ...model.tokenize(prompt)];
    const items = input.map((t, i) => i === input.length - 1 ? [t, {generateNext: {logits: true}}] : t);
    let res = await seq.controlledEvaluate(items);
    let logits = logitsArray(res[input.length - 1].next.logits, vocab);
    const out = [];
    for (let i = 0; i < n && seq.nextTokenIndex < seq.contextSize; i++) {
        const next = argMax(logits);
        if (next === model.tokens.eos) break;
        out.push(next);
        if (i + 1 < n) {
            res = await seq.controlledEvaluate([[next, {generateNext: {logits: true}}]]);
            logits = logitsArray(res[0].next.logits, vocab);
        }
    }
    const promptText = model.detokenize(input);
    const pieces = [];
    for (let i = 1; i <= out.length; i++) pieces.push(model.detokenize([...input, ...out.slice(0, i)]).slice(promptText.length));
    return {promptTokens: input, tokens: out, text: pieces.at(-1) ?? "", pieces};
}

/** Index of the first generated token whose text leaves the reference (null if all agree). */
function firstDivergence(pieces, reference) {
    for (let i = 0; i < pieces.length; i++) if (!reference.startsWith(pieces[i])) return i;
    return pieces.length < 1 || reference === pieces.at(-1) ? null : pieces.length;
}

async function perplexity(model, seq, text, chunks, ctx, vocab, savePath) {
    const tokens = [model.tokens.bos, ...model.tokenize(text)];
    chunks = Math.min(chunks, Math.floor(tokens.length / ctx));
    if (chunks < 1) throw new Error(`text has ${tokens.length} tokens, fewer than one chunk of ${ctx}`);
    const first = Math.floor(ctx / 2);
    const rows = [];
    let nll = 0, nll2 = 0, count = 0;
    for (let c = 0; c < chunks; c++) {
        await seq.clearHistory();
        const chunk = tokens.slice(c * ctx, (c + 1) * ctx);
        chunk[0] = model.tokens.bos;
        const items = chunk.map((t, i) => i >= first && i < ctx - 1 ? [t, {generateNext: {logits: true}}] : t);
        const res = await seq.controlledEvaluate(items);
        for (let i = first; i < ctx - 1; i++) {
            const l = logitsArray(res[i].next.logits, vocab);
            const {max, lse} = logSoftmaxNormalizer(l);
            const v = -(l[tokens[c * ctx + i + 1]] - max - lse);
            nll += v; nll2 += v * v; count++;
            if (savePath) rows.push(encodeRow(l, vocab));
        }
    }
    if (savePath) {
        const head = Buffer.alloc(8 + 4 * 5 + 4 * chunks * ctx);
        head.write("LBLOGPRB", 0, "ascii");
        [1, vocab, ctx, chunks, first].forEach((v, i) => head.writeInt32LE(v, 8 + 4 * i));
        for (let i = 0; i < chunks * ctx; i++) head.writeInt32LE(tokens[i], 28 + 4 * i);
        fs.writeFileSync(savePath, Buffer.concat([head, ...rows]));
    }
    const mean = nll / count, variance = nll2 / count - mean * mean, ppl = Math.exp(mean);
    return {ppl, pplError: variance > 0 && count > 1 ? Math.sqrt(variance / (count - 1)) * ppl : 0, chunks, ctx, scored: count};
}

const args = parseArgs(process.argv.slice(2));
const result = {model: args.model, loads: false};
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
let model;
try {
    model = await llama.loadModel({modelPath: args.model});
    result.loads = true;
} catch (e) {
    result.error = String(e?.message ?? e);
}
if (model) {
    const vocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
    const context = await model.createContext({contextSize: args.ctx, batchSize: args.ctx, sequences: 1, threads: args.threads});
    const seq = context.getSequence();
    if (args.bosLogits) {
        // Logits after the single token BOS: attention over one position is exact in both engines,
        // so this isolates the weight decoding and the matrix products.
        await seq.clearHistory();
        const res = await seq.controlledEvaluate([[model.tokens.bos, {generateNext: {logits: true}}]]);
        fs.writeFileSync(args.bosLogits, Array.from(logitsArray(res[0].next.logits, vocab)).join(","));
    }
    if (args.prompt !== undefined) {
        const g = await greedy(model, seq, args.prompt, args.tokens, vocab);
        result.greedy = {promptTokens: g.promptTokens, tokens: g.tokens, text: g.text};
        if (args.lowbitText) {
            const lowbit = fs.readFileSync(args.lowbitText, "utf8");
            result.greedy.lowbitText = lowbit;
            result.greedy.firstDivergence = firstDivergence(g.pieces, lowbit);
        }
    }
    if (args.text) result.perplexity = await perplexity(model, seq, fs.readFileSync(args.text, "utf8"),
        args.chunks, args.ctx, vocab, args.saveLogprobs);
    seq.dispose();
    await context.dispose();
    await model.dispose();
}
console.log(JSON.stringify(result));
