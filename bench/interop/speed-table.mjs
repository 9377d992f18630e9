// Markdown table from bench/interop/speed.sh's results: node speed-table.mjs <work dir> <format>...
// Per format, the rounds <fmt>.llama.<r>.json / <fmt>.lowbit.<r>.json (r = 1, 2, ...): each engine's mean over the
// rounds (± the spread of the round means) and the median (min–max) of the per-round Lowbit / llama.cpp ratios.
import fs from "node:fs";
const [dir, ...formats] = process.argv.slice(2);
const read = f => JSON.parse(fs.readFileSync(`${dir}/${f}`, "utf8"));
const mean = a => a.reduce((s, v) => s + v, 0) / a.length;
const sd = a => a.length > 1 ? Math.sqrt(a.reduce((s, v) => s + (v - mean(a)) ** 2, 0) / (a.length - 1)) : 0;
const median = a => { const s = [...a].sort((x, y) => x - y), m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const ts = a => `${mean(a).toFixed(2)} ± ${sd(a).toFixed(2)}`;
const ratio = (b, l) => { const r = b.map((v, i) => v / l[i]); return `${median(r).toFixed(2)} (${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)})`; };
console.log("| format | file size | rounds | llama.cpp pp | Lowbit pp | Lowbit / llama.cpp | llama.cpp tg | Lowbit tg | Lowbit / llama.cpp | load avg before (llama.cpp / Lowbit, round 1) |");
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (const f of formats) {
    const rounds = [];
    for (let r = 1; fs.existsSync(`${dir}/${f}.llama.${r}.json`) && fs.existsSync(`${dir}/${f}.lowbit.${r}.json`); r++)
        rounds.push({ l: read(`${f}.llama.${r}.json`), b: read(`${f}.lowbit.${r}.json`) });
    if (rounds.length === 0) throw new Error(`no results for ${f} in ${dir}`);
    const size = Number(fs.readFileSync(`${dir}/${f}.size`, "utf8"));
    const lp = rounds.map(x => x.l.ppTokensPerSecond.mean), lt = rounds.map(x => x.l.tgTokensPerSecond.mean);
    const bp = rounds.map(x => x.b.result.prompt_tokens_per_second.mean), bt = rounds.map(x => x.b.result.generate_tokens_per_second.mean);
    console.log(`| ${f} | ${(size / 1e9).toFixed(2)} GB | ${rounds.length} | ${ts(lp)} | ${ts(bp)} | ${ratio(bp, lp)} | ` +
        `${ts(lt)} | ${ts(bt)} | ${ratio(bt, lt)} | ${rounds[0].l.loadBefore} / ${rounds[0].b.loadBefore} |`);
}
