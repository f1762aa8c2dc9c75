import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SeccompAction, SeccompOp, type Process } from './protocol/wire.gen.js';
import { NO_SECCOMP } from './seccomp.js';
import { EngineState, type ContainerRecord } from './state.js';

const process: Process = {
  args: ['true'],
  env: [],
  cwd: '/',
  uid: 0,
  gid: 0,
  additionalGids: [],
  tty: false,
  stdin: false,
  rows: 0,
  cols: 0,
  noNewPrivileges: false,
  capabilities: [],
  username: '',
  seccomp: {
    defaultAction: SeccompAction.ALLOW,
    defaultErrnoRet: 1,
    architectures: ['x86_64'],
    rules: [
      {
        names: ['clone'],
        action: SeccompAction.ERRNO,
        errnoRet: 1,
        args: [{ index: 0, value: 0xffff_ffff_ffff_fff0n, valueTwo: 0x20000n, op: SeccompOp.MASKED_EQ }],
      },
    ],
  },
};

describe('engine state records', () => {
  const root = mkdtempSync(join(tmpdir(), 'hcr-hy-state-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const record: ContainerRecord = {
    id: 'c1',
    sandboxId: 's1',
    logPath: '',
    stdin: false,
    stdinOnce: false,
    tty: false,
    process,
  };

  it('keeps 64-bit seccomp argument values exact across a restart', () => {
    new EngineState(root).putContainer(record);
    expect(new EngineState(root).getContainer('c1')).toEqual(record);
  });

  it('gives records written before seccomp existed no filter', () => {
    const { seccomp: _, ...old } = process;
    mkdirSync(join(root, 'containers', 'c0'), { recursive: true });
    writeFileSync(join(root, 'containers', 'c0', 'record.json'), JSON.stringify({ ...record, id: 'c0', process: old }));
    expect(new EngineState(root).getContainer('c0')?.process.seccomp).toEqual(NO_SECCOMP);
  });
});
