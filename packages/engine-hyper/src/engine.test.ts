import { emptyResources, type SandboxSpec } from '@hcr/core';
import { describe, expect, it } from 'vitest';
import { hyperConfigSchema, resolveConfig } from './config.js';
import { podRoutes } from './engine.js';
import { vmSize } from './sizing.js';

const config = (raw: Record<string, unknown> = {}) => {
  const parsed = hyperConfigSchema.parse(raw);
  if (!parsed.ok) throw new Error(parsed.error);
  return resolveConfig(parsed.value, 2);
};

describe('config', () => {
  it('resolves default asset paths and refuses bad values by key', () => {
    const c = config({ assets_dir: '/nonexistent' })._unsafeUnwrap();
    expect(c.kernel).toBe('/nonexistent/vmlinuz');
    expect(c.initrd).toBe('/nonexistent/initrd.img');
    expect(c.maxVcpus).toBe(2);
    expect(config({ kvm: 'maybe' })._unsafeUnwrapErr().message).toMatch(/kvm must be "auto", "on" or "off"/);
    expect(config({ boot_timeout_seconds: 0 })._unsafeUnwrapErr().details.field).toBe('boot_timeout_seconds');
    expect(hyperConfigSchema.parse({ kvm_probe: 1 })).toMatchObject({ ok: false });
  });
});

describe('vmSize', () => {
  const spec = (resources: SandboxSpec['linux']['resources'], overhead: SandboxSpec['linux']['overhead'] = null) =>
    ({ linux: { resources, overhead } }) as SandboxSpec;
  const c = config({ max_vcpus: 4 })._unsafeUnwrap();

  it('uses the defaults for a pod without limits', () => {
    expect(vmSize(spec(null), c)).toEqual({ vcpus: 1, memoryMiB: 256 });
  });
  it('sizes from the limits plus the RuntimeClass and configured overheads, capped', () => {
    const r = { ...emptyResources, cpuQuota: 150_000, cpuPeriod: 100_000, memoryLimitInBytes: 512 * 1024 * 1024 };
    const o = { ...emptyResources, cpuQuota: 25_000, cpuPeriod: 100_000, memoryLimitInBytes: 32 * 1024 * 1024 };
    expect(vmSize(spec(r, o), c)).toEqual({ vcpus: 2, memoryMiB: 512 + 32 + 96 });
    expect(vmSize(spec({ ...r, cpuQuota: 2_000_000 }), c).vcpus).toBe(4);
  });
});

describe('podRoutes', () => {
  it('takes the CNI routes, filling in the default gateway', () => {
    const result = { routes: [{ dst: '0.0.0.0/0' }, { dst: '10.1.0.0/16', gw: '10.88.0.254' }, { dst: '::/0' }] };
    expect(podRoutes(result, '10.88.0.1')).toEqual([
      { destination: '0.0.0.0/0', gateway: '10.88.0.1' },
      { destination: '10.1.0.0/16', gateway: '10.88.0.254' },
      { destination: '::/0', gateway: '' },
    ]);
  });
  it('adds a default route via the gateway when CNI gave no routes', () => {
    expect(podRoutes({}, '10.88.0.1')).toEqual([{ destination: '0.0.0.0/0', gateway: '10.88.0.1' }]);
    expect(podRoutes(null, null)).toEqual([]);
  });
});
