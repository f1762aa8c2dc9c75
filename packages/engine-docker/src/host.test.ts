import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hostDevices, parseBoundingSet } from './host.js';

describe('parseBoundingSet', () => {
  it('names present and missing capabilities up to cap_last_cap', () => {
    const b = parseBoundingSet('Name:\tx\nCapBnd:\t000001fffeffffff\n', 40);
    expect(b.missing).toEqual(['CAP_SYS_RESOURCE']);
    expect(b.present).toHaveLength(40);
    expect(b.present).toContain('CAP_CHECKPOINT_RESTORE');
  });

  it('ignores capabilities the kernel does not have', () => {
    const b = parseBoundingSet('CapBnd:\t0000003fffffffff\n', 37);
    expect(b.missing).toEqual([]);
    expect(b.present.at(-1)).toBe('CAP_AUDIT_READ');
  });
});

describe('hostDevices', () => {
  it('lists device nodes of /dev without following into pts or shm', async () => {
    const devices = await hostDevices();
    const paths = devices.map((d) => d.PathOnHost);
    expect(paths).toContain('/dev/null');
    expect(paths.some((p) => p.startsWith('/dev/pts/') || p.startsWith('/dev/shm/'))).toBe(false);
    expect(devices.every((d) => d.PathInContainer === d.PathOnHost && d.CgroupPermissions === 'rwm')).toBe(true);
  });

  it('finds nothing in a directory without devices', async () => {
    expect(await hostDevices(mkdtempSync(join(tmpdir(), 'nodev-')))).toEqual([]);
  });
});
