// Parse AsyncAPI documents with the AsyncAPI project's own parser and report what it says.
//
//   node tests/asyncapi/validate.mjs DOC.json [DOC.yaml ...]
//
// Prints one JSON object on stdout: {"parser": "<version>", "results": [{"file", "parsed",
// "diagnostics": [{"severity", "code", "message", "path"}]}]}, where "parsed" is whether the
// parser gave back a document. Exit code 0: every document parsed with no error-level
// diagnostic; 1: at least one did not; 2: the script could not run (no file given, a file
// that cannot be read). tests/test_asyncapi_parser.py runs it.

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

import { DiagnosticSeverity, Parser } from "@asyncapi/parser";

const SEVERITY = {
  [DiagnosticSeverity.Error]: "error",
  [DiagnosticSeverity.Warning]: "warning",
  [DiagnosticSeverity.Information]: "information",
  [DiagnosticSeverity.Hint]: "hint",
};

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write("usage: node validate.mjs DOC.json [DOC.yaml ...]\n");
  process.exit(2);
}

const require = createRequire(import.meta.url);
const version = require("@asyncapi/parser/package.json").version;
const parser = new Parser();
const results = [];
let failed = false;
for (const file of files) {
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    process.stderr.write(`cannot read ${file}: ${error.message}\n`);
    process.exit(2);
  }
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const found = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join("/"),
  }));
  const parsed = document !== undefined;
  if (!parsed || found.some((d) => d.severity === "error")) {
    failed = true;
  }
  results.push({ file, parsed, diagnostics: found });
}
process.stdout.write(JSON.stringify({ parser: version, results }) + "\n");
process.exit(failed ? 1 : 0);
