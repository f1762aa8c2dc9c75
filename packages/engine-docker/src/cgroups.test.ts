import { describe, expect, it } from 'vitest';
import { locateCgroup, parseCgroupMounts, parseNetDev, parseProcCgroup } from './cgroups.js';

const hybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;

describe('cgroup location', () => {
  it('uses v1 hierarchies on a hybrid host', () => {
    const proc = parseProcCgroup(
      '8:pids:/docker/abc\n4:memory:/docker/abc\n2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/\n',
    );
    expect(locateCgroup(parseCgroupMounts(hybrid), proc)).toEqual({
      version: 1,
      cpuacct: '/sys/fs/cgroup/cpuacct/docker/abc',
      memory: '/sys/fs/cgroup/memory/docker/abc',
      pids: '/sys/fs/cgroup/pids/docker/abc',
    });
  });

  it('handles combined controllers and a pure v2 host', () => {
    const combined = parseCgroupMounts(
      '30 20 0:5 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n31 20 0:6 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
    );
    const loc = locateCgroup(combined, parseProcCgroup('3:cpu,cpuacct:/k/p\n2:memory:/k/p'));
    expect(loc).toMatchObject({
      cpuacct: '/sys/fs/cgroup/cpu,cpuacct/k/p',
      memory: '/sys/fs/cgroup/memory/k/p',
      pids: null,
    });
    const v2 = parseCgroupMounts('40 20 0:7 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate');
    expect(locateCgroup(v2, parseProcCgroup('0::/system.slice/docker-abc.scope'))).toEqual({
      version: 2,
      dir: '/sys/fs/cgroup/system.slice/docker-abc.scope',
    });
  });

  it('strips the mount root inside a cgroup namespace', () => {
    const ns = parseCgroupMounts('40 20 0:7 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw');
    expect(locateCgroup(ns, parseProcCgroup('0::/outer/inner'))).toEqual({ version: 2, dir: '/sys/fs/cgroup/inner' });
  });
});

describe('parseNetDev', () => {
  it('sums every interface but lo', () => {
    const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    2000      20    0    0    0     0          0         0     3000      30    0    0    0     0       0          0
  eth1:       5       1    0    0    0     0          0         0        7       1    0    0    0     0       0          0`;
    expect(parseNetDev(text)).toEqual({ rxBytes: 2005, txBytes: 3007 });
  });
});
