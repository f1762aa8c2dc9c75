import { describe, expect, it } from 'vitest';
import { containerFiles } from './layout.js';
import type { LaunchRequest } from './monitor.js';
import { firecrackerArgv, firecrackerConfig } from './firecracker.js';
import { decodeQemuExit, kvmProbeRom, qemuArgv } from './qemu.js';
import { decodeSolo5Exit, solo5Argv } from './solo5.js';
import { parseMonitorStatus } from './supervisor.js';

const req = (over: Partial<LaunchRequest> = {}): LaunchRequest => ({
  containerId: 'abcdef0123456789',
  files: containerFiles('/run/hcr/uk', 'abcdef0123456789'),
  netnsPath: '/run/netns/p',
  type: 'linux',
  kernel: '/rootfs/vmlinuz',
  initrd: '/rootfs/initrd',
  cmdline: 'console=ttyS0 rdinit=/init',
  memoryMiB: 128,
  vcpus: 2,
  nic: { tap: 'ukabc', mac: '02:00:00:00:00:01', mtu: 1500 },
  ...over,
});

const after = (argv: string[], flag: string) => argv[argv.indexOf(flag) + 1];

describe('QEMU', () => {
  it('boots linux on microvm with virtio-mmio networking, the console to a file and isa-debug-exit', () => {
    const argv = qemuArgv('qemu-system-x86_64', 'tcg', req());
    expect(after(argv, '-M')).toBe('microvm');
    expect(after(argv, '-accel')).toBe('tcg');
    expect(argv).not.toContain('-cpu');
    expect(after(argv, '-m')).toBe('128M');
    expect(after(argv, '-smp')).toBe('2');
    expect(after(argv, '-kernel')).toBe('/rootfs/vmlinuz');
    expect(after(argv, '-initrd')).toBe('/rootfs/initrd');
    expect(after(argv, '-append')).toBe('console=ttyS0 rdinit=/init');
    expect(argv).toContain('-no-reboot');
    expect(argv).toContain('isa-debug-exit,iobase=0xf4,iosize=0x04');
    expect(argv).toContain('file,id=console,path=/run/hcr/uk/containers/abcdef0123456789/console.log,append=on');
    expect(argv).toContain('tap,id=net0,ifname=ukabc,script=no,downscript=no');
    expect(argv).toContain('virtio-net-device,netdev=net0,mac=02:00:00:00:00:01');
  });

  it('boots unikraft on pc with virtio-net-pci, KVM with -cpu max, no NIC when the pod has none', () => {
    const argv = qemuArgv('qemu', 'kvm', req({ type: 'unikraft', initrd: null, nic: null }));
    expect(after(argv, '-M')).toBe('pc');
    expect(after(argv, '-cpu')).toBe('max');
    expect(argv).not.toContain('-initrd');
    expect(argv).not.toContain('-netdev');
    const withNic = qemuArgv('qemu', 'kvm', req({ type: 'unikraft' }));
    expect(withNic).toContain('virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01,host_mtu=1500');
  });

  it('escapes commas in option values', () => {
    const argv = qemuArgv('qemu', 'tcg', req({ files: containerFiles('/run/a,b', 'x') }));
    expect(argv).toContain('file,id=console,path=/run/a,,b/containers/x/console.log,append=on');
  });

  it('decodes isa-debug-exit, power-off, QEMU failures and signals', () => {
    expect(decodeQemuExit({ kind: 'exit', code: 15 }, '')).toMatchObject({ exitCode: 7, reason: 'Error' });
    expect(decodeQemuExit({ kind: 'exit', code: 1 }, '')).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect(decodeQemuExit({ kind: 'exit', code: 0 }, '')).toMatchObject({
      exitCode: 0,
      reason: 'Completed',
      message: 'the guest powered off',
    });
    const failed = decodeQemuExit({ kind: 'exit', code: 1 }, 'qemu-system-x86_64: could not load kernel');
    expect(failed).toMatchObject({ exitCode: 1, reason: 'Error' });
    expect(failed.message).toMatch(/QEMU failed: .*could not load kernel/);
    expect(decodeQemuExit({ kind: 'exit', code: 1 }, 'qemu-system-x86_64: warning: host lacks pni')).toMatchObject({
      exitCode: 0,
    });
    expect(decodeQemuExit({ kind: 'signal', signal: 9 }, '')).toMatchObject({ exitCode: 137, reason: 'Error' });
    expect(decodeQemuExit({ kind: 'signal', signal: 15 }, '')).toMatchObject({ exitCode: 143 });
  });

  it('builds a probe ROM whose reset vector writes 42 to isa-debug-exit', () => {
    const rom = kvmProbeRom();
    expect(rom.length).toBe(65536);
    expect([...rom.subarray(0xfff0, 0xfff5)]).toEqual([0xb0, 42, 0xe6, 0xf4, 0xf4]);
  });
});

describe('Solo5 and Firecracker', () => {
  it('passes the TAP as the service device and the command line after --', () => {
    const argv = solo5Argv('solo5-hvt', req({ type: 'rumprun', cmdline: 'hello world' }));
    expect(argv).toEqual([
      'solo5-hvt',
      '--mem=128',
      '--net:service=ukabc',
      '--net-mac:service=02:00:00:00:00:01',
      '--',
      '/rootfs/vmlinuz',
      'hello',
      'world',
    ]);
    expect(decodeSolo5Exit({ kind: 'exit', code: 3 }, '', 'solo5-hvt')).toMatchObject({ exitCode: 3, reason: 'Error' });
  });

  it('describes the whole VM in a firecracker config file', () => {
    expect(firecrackerConfig(req())).toEqual({
      'boot-source': {
        kernel_image_path: '/rootfs/vmlinuz',
        boot_args: 'console=ttyS0 rdinit=/init',
        initrd_path: '/rootfs/initrd',
      },
      drives: [],
      'machine-config': { vcpu_count: 2, mem_size_mib: 128 },
      'network-interfaces': [{ iface_id: 'eth0', host_dev_name: 'ukabc', guest_mac: '02:00:00:00:00:01' }],
    });
    expect(firecrackerArgv('firecracker', req())).toContain('--no-api');
  });
});

describe('supervisor status', () => {
  it('parses exit and signal records', () => {
    expect(parseMonitorStatus('exit 15\n')).toEqual({ kind: 'exit', code: 15 });
    expect(parseMonitorStatus('signal 9\n')).toEqual({ kind: 'signal', signal: 9 });
    expect(parseMonitorStatus('garbage')).toBeNull();
  });
});
