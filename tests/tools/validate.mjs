// Validate an AsyncAPI document with the official parser (@asyncapi/parser).
//
// Usage: node validate.mjs FILE
// Prints one line per diagnostic: "<severity> <path>: <message>".
// Exit 0: the document parsed and no diagnostic has severity error.
// Exit 1: the document is invalid (at least one error).
// Exit 2: usage error, unreadable file, or the parser is not installed.
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const SEVERITY = ["error", "warning", "info", "hint"];

async function main(argv) {
  if (argv.length !== 1) {
    console.error("usage: node validate.mjs FILE");
    return 2;
  }
  let Parser;
  try {
    ({ Parser } = await import("@asyncapi/parser"));
  } catch (err) {
    console.error(`@asyncapi/parser is not installed (run make tools): ${err.message}`);
    return 2;
  }
  const file = resolve(argv[0]);
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    console.error(`${argv[0]}: ${err.message}`);
    return 2;
  }
  const { document, diagnostics } = await new Parser().parse(text, {
    source: pathToFileURL(file).href,
  });
  let errors = 0;
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] ?? String(d.severity);
    if (d.severity === 0) errors += 1;
    console.log(`${severity} ${d.path.join(".") || "/"}: ${d.message} [${d.code}]`);
  }
  if (document === undefined && errors === 0) {
    console.log("error /: the parser returned no document");
    errors = 1;
  }
  console.log(`${errors} error(s), ${diagnostics.length} diagnostic(s)`);
  return errors ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
