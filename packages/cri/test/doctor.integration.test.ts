import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { runDoctor } from '../src/doctor.js';
import { startShim, type TestShim } from './helpers/shim.js';

describe('hcr doctor', () => {
  const empty = mkdtempSync(join(tmpdir(), 'hcr-doctor-'));
  let shim: TestShim | undefined;
  afterAll(async () => {
    await shim?.stop();
    rmSync(empty, { recursive: true, force: true });
  });

  it('names every missing piece on a machine without setup', async () => {
    const cfg = parseConfig(
      [
        `socket = "${empty}/hcr.sock"`,
        `[cni]`,
        `conf_dir = "${empty}/net.d"`,
        `bin_dirs = ["${empty}/bin"]`,
        `[engines.docker]`,
        `kind = "docker"`,
        `socket = "${empty}/docker.sock"`,
      ].join('\n'),
      'test',
    )._unsafeUnwrap();
    const lines: string[] = [];
    const worst = await runDoctor(cfg, (l) => lines.push(l), { assetsDir: empty, path: `${empty}/bin` });
    expect(worst).toBe('FAIL');
    const failed = lines.filter((l) => l.startsWith('FAIL')).map((l) => l.slice(6, l.indexOf(':')));
    expect(failed).toEqual([
      'dockerd',
      'runc',
      'qemu',
      'cni config',
      'cni plugins',
      'host tools',
      'pause binary',
      'guest assets',
    ]);
    for (const l of lines.filter((x) => x.startsWith('FAIL'))) expect(l).toMatch(/\(fix: .+\)/);
  });

  it('reports all OK after setup, KVM as a warning with its reason', async () => {
    shim = await startShim();
    const cfg = parseConfig(`socket = "${shim.socket}"\n[engines.docker]\nkind = "docker"`, 'test')._unsafeUnwrap();
    const lines: string[] = [];
    await runDoctor(cfg, (l) => lines.push(l));
    const notOk = lines.filter((l) => !l.startsWith('OK'));
    expect(
      notOk.every((l) => /^WARN\s+kvm:/.test(l)),
      notOk.join('\n'),
    ).toBe(true);
  }, 120_000);
});
