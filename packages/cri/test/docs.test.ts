import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { BUILTIN_ENGINES } from '../src/compose.js';
import { renderConfigReference } from '../src/config-doc.js';
import { parseConfig, DEFAULT_CONFIG_TOML } from '../src/config.js';

it('docs/configuration.md is generated from the current schemas (run `pnpm docs:gen`)', () => {
  const file = readFileSync(fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url)), 'utf8');
  expect(file).toBe(renderConfigReference(BUILTIN_ENGINES));
});

it('the documented default config parses, and every default engine config validates', () => {
  const cfg = parseConfig(DEFAULT_CONFIG_TOML, 'default')._unsafeUnwrap();
  for (const [name, inst] of Object.entries(cfg.engines)) {
    const reg = BUILTIN_ENGINES.find((r) => r.kind === inst.kind);
    expect(reg, name).toBeDefined();
    expect(reg?.configSchema.parse(inst.options).ok, name).toBe(true);
  }
});

it('config errors name the key', () => {
  expect(parseConfig('bogus = 1', 't')._unsafeUnwrapErr()).toMatch(/unknown key "bogus"/);
  expect(parseConfig('[runtimes.x]\nengine = "nope"', 't')._unsafeUnwrapErr()).toMatch(/runtimes\.x\.engine = "nope"/);
  expect(parseConfig('log_level = "loud"', 't')._unsafeUnwrapErr()).toMatch(/log_level/);
  expect(parseConfig('socket = 3', 't')._unsafeUnwrapErr()).toMatch(/socket must be a string/);
  expect(parseConfig('[streaming\n', 't')._unsafeUnwrapErr()).toMatch(/invalid TOML/);
});
