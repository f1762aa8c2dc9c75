import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/shim.js';

/** Every non-test TypeScript source of the packages and examples. */
function sources(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (name === 'node_modules' || name === 'generated') continue;
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts') && !name.endsWith('.test.ts') && !name.endsWith('.d.ts')) out.push(path);
    }
  };
  for (const top of ['packages', 'examples']) {
    for (const pkg of readdirSync(join(repoRoot, top))) {
      const src = join(repoRoot, top, pkg, 'src');
      try {
        if (statSync(src).isDirectory()) walk(src);
      } catch {
        // a package without sources
      }
    }
  }
  return out;
}

// Host processes are started with argv arrays only: no API that hands a
// command line to a shell, no `shell: true`, and no shell script assembled
// from values (a constant `sh -c` script taking its arguments as "$@" is fine).
describe('process spawns take argv arrays', () => {
  const files = sources().map((path) => ({ path: relative(repoRoot, path), text: readFileSync(path, 'utf8') }));

  it('finds the sources it checks', () => {
    expect(files.length).toBeGreaterThan(50);
    expect(files.some((f) => /from 'node:child_process'/.test(f.text))).toBe(true);
  });

  it('never imports exec or execSync (command strings run by /bin/sh)', () => {
    const offenders = files.filter((f) =>
      [...f.text.matchAll(/import\s*\{([^}]*)\}\s*from\s*['"](?:node:)?child_process['"]/g)].some((m) =>
        (m[1] ?? '').split(',').some((n) => /^\s*(?:type\s+)?(exec|execSync)\s*(?:as\s+\w+)?\s*$/.test(n)),
      ),
    );
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('never passes shell: true', () => {
    expect(files.filter((f) => /\bshell\s*:\s*(true|['"`])/.test(f.text)).map((f) => f.path)).toEqual([]);
  });

  it('never builds a shell script from values', () => {
    const built = /['"]-c['"]\s*,\s*(`[^`]*\$\{|[A-Za-z_$][\w$.]*\s*[,)\]]|['"][^'"]*['"]\s*\+)/;
    expect(files.filter((f) => built.test(f.text)).map((f) => f.path)).toEqual([]);
  });
});
