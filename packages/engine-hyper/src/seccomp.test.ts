import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SeccompAction, SeccompOp } from './protocol/wire.gen.js';
import {
  NO_SECCOMP,
  requireSeccompSupport,
  resolveProfile,
  RUNTIME_DEFAULT_PROFILE,
  seccompFor,
  type SeccompTarget,
} from './seccomp.js';
import { DEFAULT_CAPABILITIES } from './translate.js';

const target: SeccompTarget = { engine: 'hyper', capabilities: DEFAULT_CAPABILITIES, kernelRelease: '6.1.0-56-amd64' };
const withCaps = (...caps: string[]): SeccompTarget => ({
  ...target,
  capabilities: [...DEFAULT_CAPABILITIES, ...caps],
});
const denied = (t: SeccompTarget) =>
  resolveProfile(RUNTIME_DEFAULT_PROFILE, t)
    ._unsafeUnwrap()
    .rules.flatMap((r) => r.names);

describe('seccomp profiles for hyper containers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hcr-seccomp-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('RuntimeDefault denies what the container lacks the capability for, and nothing it holds', () => {
    const plain = resolveProfile(RUNTIME_DEFAULT_PROFILE, target)._unsafeUnwrap();
    expect(plain.defaultAction).toBe(SeccompAction.ALLOW);
    expect(plain.architectures).toEqual(['x86_64', 'x86', 'x32']);
    expect(denied(target)).toEqual(expect.arrayContaining(['keyctl', 'mount', 'unshare', 'setns', 'clone', 'bpf']));
    // Allowed as in Docker's default: the kernel's capability checks decide.
    expect(denied(target)).not.toEqual(expect.arrayContaining(['sethostname']));
    expect(denied(target)).not.toContain('ptrace');

    const admin = denied(withCaps('CAP_SYS_ADMIN'));
    expect(admin).not.toContain('mount');
    expect(admin).not.toContain('clone');
    expect(admin).not.toContain('clone3');
    expect(admin).toContain('keyctl'); // no capability grants it
    expect(denied(withCaps('CAP_SYS_TIME'))).not.toContain('clock_settime');

    const clone3 = plain.rules.find((r) => r.names.includes('clone3'));
    expect(clone3).toMatchObject({ action: SeccompAction.ERRNO, errnoRet: 38 });
    const cloneUser = plain.rules.find((r) => r.names.includes('clone') && r.args[0]?.value === 0x10000000n);
    expect(cloneUser?.args).toEqual([{ index: 0, value: 0x10000000n, valueTwo: 0x10000000n, op: SeccompOp.MASKED_EQ }]);
  });

  it('reads the OCI/Docker format: actions, errno, archMap, includes and excludes', () => {
    const r = resolveProfile(
      {
        defaultAction: 'SCMP_ACT_ERRNO',
        defaultErrnoRet: 38,
        archMap: [
          { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'] },
          { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
        ],
        syscalls: [
          { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
          { name: 'kill', action: 'SCMP_ACT_KILL' },
          { names: ['ptrace'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '4.8' } },
          { names: ['future_call'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '99.1' } },
          { names: ['arm_only'], action: 'SCMP_ACT_ALLOW', includes: { arches: ['arm64'] } },
          { names: ['not_amd64'], action: 'SCMP_ACT_ALLOW', excludes: { arches: ['amd64'] } },
          { names: ['needs_admin'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
          {
            names: ['personality'],
            action: 'SCMP_ACT_TRACE',
            errnoRet: 7,
            args: [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }],
          },
        ],
      },
      target,
    )._unsafeUnwrap();
    expect(r.defaultAction).toBe(SeccompAction.ERRNO);
    expect(r.defaultErrnoRet).toBe(38);
    expect(r.architectures).toEqual(['x86_64', 'x86', 'x32']);
    expect(r.rules.map((x) => x.names.join())).toEqual(['read,write', 'kill', 'ptrace', 'personality']);
    expect(r.rules[1]).toMatchObject({ action: SeccompAction.KILL_THREAD });
    expect(r.rules[3]).toEqual({
      names: ['personality'],
      action: SeccompAction.TRACE,
      errnoRet: 7,
      args: [{ index: 0, value: 8n, valueTwo: 0n, op: SeccompOp.EQ }],
    });
  });

  it('refuses what it cannot apply, naming it', () => {
    const notify = resolveProfile({ defaultAction: 'SCMP_ACT_NOTIFY' }, target);
    expect(notify._unsafeUnwrapErr().code).toBe('Unsupported');
    const bad = [
      [{ defaultAction: 'SCMP_ACT_MAYBE' }, 'unknown action'],
      [{ defaultAction: 'constructor' }, 'unknown action'],
      [{ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ action: 'SCMP_ACT_ERRNO' }] }, 'names no system call'],
      [
        {
          defaultAction: 'SCMP_ACT_ALLOW',
          syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 6 }] }],
        },
        'index must be 0..5',
      ],
      [
        {
          defaultAction: 'SCMP_ACT_ALLOW',
          syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, op: 'SCMP_CMP_ABOUT' }] }],
        },
        'unknown op',
      ],
      [[], 'JSON object'],
    ] as const;
    for (const [profile, message] of bad) {
      const e = resolveProfile(profile, target)._unsafeUnwrapErr();
      expect(e.code).toBe('InvalidArgument');
      expect(e.message).toContain(message);
    }
  });

  it('resolves the CRI profile kinds; a Localhost profile is an absolute JSON file on the node', async () => {
    expect((await seccompFor(null, target))._unsafeUnwrap()).toEqual(NO_SECCOMP);
    expect((await seccompFor({ type: 'unconfined', localhostRef: '' }, target))._unsafeUnwrap()).toEqual(NO_SECCOMP);
    const dflt = (await seccompFor({ type: 'runtimeDefault', localhostRef: '' }, target))._unsafeUnwrap();
    expect(dflt.rules.length).toBeGreaterThan(0);

    const path = join(dir, 'p.json');
    writeFileSync(
      path,
      JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['chmod'], action: 'SCMP_ACT_ERRNO' }] }),
    );
    for (const ref of [path, `localhost/${path}`]) {
      const r = (await seccompFor({ type: 'localhost', localhostRef: ref }, target))._unsafeUnwrap();
      expect(r.rules).toEqual([{ names: ['chmod'], action: SeccompAction.ERRNO, errnoRet: 1, args: [] }]);
    }
    writeFileSync(join(dir, 'bad.json'), '{"defaultAction": ');
    for (const [ref, message] of [
      ['profiles/p.json', 'must be an absolute path'],
      [join(dir, 'missing.json'), 'cannot read seccomp profile'],
      [join(dir, 'bad.json'), 'is not JSON'],
    ] as const) {
      const e = (await seccompFor({ type: 'localhost', localhostRef: ref }, target))._unsafeUnwrapErr();
      expect(e.code).toBe('InvalidArgument');
      expect(e.message).toContain(message);
    }
  });

  it('refuses a filter on a pod whose agent predates seccomp, and nothing else', () => {
    const filter = resolveProfile(RUNTIME_DEFAULT_PROFILE, target)._unsafeUnwrap();
    expect(requireSeccompSupport(filter, new Set(['seccomp']), 'p1').isOk()).toBe(true);
    expect(requireSeccompSupport(NO_SECCOMP, new Set(), 'p1').isOk()).toBe(true);
    const e = requireSeccompSupport(filter, new Set(), 'p1')._unsafeUnwrapErr();
    expect(e.code).toBe('FailedPrecondition');
    expect(e.message).toContain('recreate the pod');
  });
});
