// Validates an AsyncAPI document with the official parser (@asyncapi/parser), resolving the
// relative file $refs to the JSON Schemas next to it. Exit 0 when valid; 1 with the error
// diagnostics on stderr otherwise; 2 on bad usage.
//
//   node validate.mjs [path/to/asyncapi.yaml]     (default: ../../docs/asyncapi.yaml)
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';

const here = path.dirname(fileURLToPath(import.meta.url));
const docPath = path.resolve(process.argv[2] ?? path.join(here, '..', '..', 'docs', 'asyncapi.yaml'));
if (!existsSync(docPath)) {
  console.error(`asyncapi: no such file: ${docPath}`);
  process.exit(2);
}

const severityName = (s) => DiagnosticSeverity[s] ?? String(s);
const where = (d) => {
  const at = d.path && d.path.length ? `/${d.path.join('/')}` : '(document)';
  const line = d.range ? `:${d.range.start.line + 1}` : '';
  return `${d.source ?? docPath}${line} ${at}`;
};

// fromFile passes the absolute path as `source`, which is what makes the parser resolve
// "../schemas/..." relative to the document rather than to the working directory.
const { document, diagnostics } = await fromFile(new Parser(), docPath).parse();

const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error || d.severity === DiagnosticSeverity.Warning) {
    console.error(`${severityName(d.severity).toLowerCase()} [${d.code}] ${where(d)}: ${d.message}`);
  }
}

// A $ref the resolver could not follow would leave a payload without properties: check each
// message's payload really is its frame schema (type const = message name).
const unresolved = [];
let messageCount = 0;
if (document) {
  for (const message of document.messages()) {
    messageCount += 1;
    const name = message.name() ?? message.id();
    // A multi-format payload comes back as {schemaFormat, schema}.
    const payload = message.payload()?.json() ?? {};
    const schema = payload.schema ?? payload;
    // A frame with several shapes (error, ack) has them under `definitions`, each with its type.
    const shapes = Object.values(schema.definitions ?? {});
    const typeSchema = schema.properties?.type ?? shapes.find((d) => d?.properties?.type)?.properties?.type;
    if (!schema.$id || typeSchema?.const !== name) {
      unresolved.push(`message ${name}: payload not resolved to a frame schema with type const "${name}"`);
    }
  }
}
for (const line of unresolved) console.error(`error ${line}`);

if (!document || errors.length || unresolved.length) {
  console.error(`asyncapi: INVALID ${docPath} (${errors.length + unresolved.length} error(s))`);
  process.exit(1);
}
const operations = document.operations().length;
console.log(`asyncapi: OK ${docPath} (${messageCount} messages, ${operations} operations)`);
