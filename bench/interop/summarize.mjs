// Markdown table from the per-format JSON files that run.sh leaves in $WORK.
// usage: node summarize.mjs WORK MIX...
import fs from "node:fs";
import path from "node:path";

const [work, ...mixes] = process.argv.slice(2);
const read = (f) => { try { return JSON.parse(fs.readFileSync(path.join(work, f), "utf8")); } catch { return null; } };
const fix = (v, d) => typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : "n/a";
const sci = (v) => typeof v === "number" && Number.isFinite(v) ? v.toExponential(1) : "n/a";
const pct = (v) => typeof v === "number" && Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "n/a";

console.log("| format | loads in llama.cpp | same token ids | greedy 32 tokens: first divergence | PPL llama.cpp | PPL Lowbit | Δ PPL | KLD, Lowbit default (same top-1) | KLD, ggml-faithful (same top-1) | BOS max abs Δlogit: float / ggml-faithful |");
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const mix of mixes) {
    const llama = read(`${mix}.llama.json`), lowbit = read(`${mix}.lowbit-ppl.json`)?.result;
    const faithful = read(`${mix}.faithful.json`), bos = read(`${mix}.bos.json`);
    if (!llama) { console.log(`| ${mix} | not run | | | | | | | | |`); continue; }
    if (!llama.loads) { console.log(`| ${mix} | **no**: ${String(llama.error).split("\n")[0].replace(/\|/g, "/")} | | | | | | | | |`); continue; }
    const sameIds = read(`${mix}.kld.json`)?.result ? "yes" : "no (lowbit kld refused the ids)";
    const g = llama.greedy;
    const div = g.firstDivergence === null ? `none (${g.tokens.length}/${g.tokens.length} equal)` : `token ${g.firstDivergence}`;
    const pl = llama.perplexity?.ppl, pb = lowbit?.perplexity;
    const delta = pl && pb ? `${(100 * (pb - pl) / pl).toFixed(2)}%` : "n/a";
    const k = (r) => r ? `${sci(r.mean_kld)} (${pct(r.same_top)})` : "n/a";
    console.log(`| ${mix} | yes | ${sameIds} | ${div} | ${fix(pl, 3)} | ${fix(pb, 3)} | ${delta} | ${k(faithful?.lowbit_default)} | ${k(faithful?.ggml_faithful)} | ${sci(bos?.float_activations)} / ${sci(bos?.ggml_faithful)} |`);
}
