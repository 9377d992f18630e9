// Markdown table from bench/interop/speed.sh's results: node speed-table.mjs <work dir> <format>...
import fs from "node:fs";
const [dir, ...formats] = process.argv.slice(2);
const read = f => JSON.parse(fs.readFileSync(`${dir}/${f}`, "utf8"));
const ts = m => `${m.mean.toFixed(2)} ± ${(m.stdDev ?? m.std_dev).toFixed(2)}`;
console.log("| format | file size | llama.cpp pp | Lowbit pp | Lowbit / llama.cpp | llama.cpp tg | Lowbit tg | Lowbit / llama.cpp | load avg before (llama.cpp / Lowbit) |");
console.log("|---|---|---|---|---|---|---|---|---|");
for (const f of formats) {
    const l = read(`${f}.llama.json`), b = read(`${f}.lowbit.json`);
    const size = Number(fs.readFileSync(`${dir}/${f}.size`, "utf8"));
    const lp = l.ppTokensPerSecond, lt = l.tgTokensPerSecond;
    const bp = b.result.prompt_tokens_per_second, bt = b.result.generate_tokens_per_second;
    console.log(`| ${f} | ${(size / 1e9).toFixed(2)} GB | ${ts(lp)} | ${ts(bp)} | ${(bp.mean / lp.mean).toFixed(2)} | ` +
        `${ts(lt)} | ${ts(bt)} | ${(bt.mean / lt.mean).toFixed(2)} | ${l.loadBefore} / ${b.loadBefore} |`);
}
