import { describe, expect, it } from 'vitest';
import { DEFAULT_CAPABILITIES, LINUX_CAPABILITIES, capabilityName, containerCapabilities } from '../src/index.js';

describe('capabilities', () => {
  it('normalises names and refuses unknown ones', () => {
    expect(capabilityName('net_admin')._unsafeUnwrap()).toBe('CAP_NET_ADMIN');
    expect(capabilityName(' CAP_SYS_TIME ')._unsafeUnwrap()).toBe('CAP_SYS_TIME');
    expect(capabilityName('CAP_FLY')._unsafeUnwrapErr().code).toBe('InvalidArgument');
  });

  it('computes the CRI set: defaults, ALL, drops and adds, in kernel order', () => {
    expect(containerCapabilities([], [])._unsafeUnwrap().sort()).toEqual([...DEFAULT_CAPABILITIES].sort());
    expect(containerCapabilities(['ALL'], [])._unsafeUnwrap()).toEqual([...LINUX_CAPABILITIES]);
    expect(containerCapabilities(['NET_RAW'], ['ALL'])._unsafeUnwrap()).toEqual(['CAP_NET_RAW']);
    expect(containerCapabilities(['SYS_ADMIN'], ['chown'])._unsafeUnwrap()).toContain('CAP_SYS_ADMIN');
    expect(containerCapabilities([], ['chown'])._unsafeUnwrap()).not.toContain('CAP_CHOWN');
  });
});
