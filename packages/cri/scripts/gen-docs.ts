// Regenerates docs/configuration.md (`pnpm docs`); a unit test fails when it is stale.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BUILTIN_ENGINES } from '../src/compose.js';
import { renderConfigReference } from '../src/config-doc.js';

const target = fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url));
writeFileSync(target, renderConfigReference(BUILTIN_ENGINES));
console.log(`wrote ${target}`);
