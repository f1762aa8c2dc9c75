import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('generated protocol code', () => {
  it('matches protocol/agent.json (scripts/check-protocol.sh)', () => {
    const out = execFileSync('bash', [join(pkg, 'scripts', 'check-protocol.sh')], { encoding: 'utf8' });
    expect(out).toContain('generated code matches');
  }, 60_000);
});
