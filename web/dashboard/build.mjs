// Builds the dashboard into master/dashboard/dist, which master/dashboard
// embeds (go:embed cannot reach web/). The directory is emptied first,
// except .keep: the committed placeholder that keeps the embed pattern
// matching when the dashboard was never built.
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "master", "dashboard", "dist");

mkdirSync(out, { recursive: true });
for (const f of readdirSync(out)) {
  if (f !== ".keep") rmSync(join(out, f), { recursive: true, force: true });
}
await esbuild.build({
  entryPoints: { main: join(here, "src", "main.js") }, // main.js and main.css
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  outdir: out,
  legalComments: "linked", // third-party licences in main.js.LEGAL.txt / main.css.LEGAL.txt
  logLevel: "warning",
});
copyFileSync(join(here, "index.html"), join(out, "index.html"));
console.log("dashboard built into " + out);
