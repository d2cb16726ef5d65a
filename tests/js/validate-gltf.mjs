// Runs the Khronos glTF validator (npm gltf-validator, pinned in package.json) over GLB/glTF files and
// prints one JSON array of reports on standard output: [{path, errors, warnings, infos, messages}].
// Used by tests/test_3dtiles.py; exit status 2 on bad usage or an unreadable file, 0 otherwise (the
// caller judges the reports).
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node validate-gltf.mjs FILE.glb [...]");
  process.exit(2);
}
const reports = [];
for (const path of paths) {
  let bytes;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (err) {
    console.error(`${path}: ${err.message}`);
    process.exit(2);
  }
  const result = await validator.validateBytes(bytes, { uri: path, maxIssues: 200 });
  const issues = result.issues;
  reports.push({
    path,
    validatorVersion: result.validatorVersion,
    errors: issues.numErrors,
    warnings: issues.numWarnings,
    infos: issues.numInfos,
    messages: issues.messages.map((m) => ({ code: m.code, severity: m.severity, message: m.message, pointer: m.pointer })),
  });
}
process.stdout.write(JSON.stringify(reports));
