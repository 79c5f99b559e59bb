// `pnpm bench <name> [args…]` runs bench/<name>.ts. Each benchmark prints JSON lines.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((file) => file.endsWith('.ts') && file !== 'run.ts')
  .map((file) => file.slice(0, -'.ts'.length));
const name = process.argv[2];
if (name === undefined || !existsSync(join(here, `${name}.ts`))) {
  console.error(`usage: pnpm bench <${available.join('|')}> [args…]`);
  process.exit(2);
}
process.argv.splice(2, 1);
await import(pathToFileURL(join(here, `${name}.ts`)).href);
