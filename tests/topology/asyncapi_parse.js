// Parse an AsyncAPI document with the official parser; print its diagnostics as JSON lines and
// exit 1 when any has error severity (0). Usage: node asyncapi_parse.js FILE
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

async function main() {
  const text = fs.readFileSync(process.argv[2], "utf8");
  const { document, diagnostics } = await new Parser().parse(text);
  for (const d of diagnostics) {
    console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (errors.length > 0 || document === undefined) {
    process.exit(1);
  }
  console.log(`valid: ${document.channels().length} channels, ${document.operations().length} operations`);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
