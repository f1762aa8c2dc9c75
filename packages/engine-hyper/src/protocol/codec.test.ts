import { describe, expect, it } from 'vitest';
import { decodeBody, encodeBody } from './codec.js';
import { encodeFrame, FrameDecoder } from './frame.js';
import { ContainerStatus, MessageType, SeccompAction, SeccompOp, type CreateContainer } from './wire.gen.js';

const create: CreateContainer = {
  id: 'c1',
  rootfs: 'c/c1/rootfs',
  hostname: 'pod',
  mounts: [
    { source: 'pod/hosts', destination: '/etc/hosts', readonly: false },
    { source: 'c/c1/m/0', destination: '/data', readonly: true },
  ],
  process: {
    args: ['sh', '-c', 'echo héllo'],
    env: ['PATH=/bin', 'A='],
    cwd: '/',
    uid: 0,
    gid: 0,
    additionalGids: [10, 65534],
    tty: false,
    stdin: true,
    rows: 0,
    cols: 0,
    noNewPrivileges: true,
    capabilities: ['CAP_CHOWN'],
    username: 'nobody',
    seccomp: {
      defaultAction: SeccompAction.ALLOW,
      defaultErrnoRet: 1,
      architectures: ['x86_64', 'x32'],
      rules: [
        {
          names: ['clone'],
          action: SeccompAction.ERRNO,
          errnoRet: 1,
          args: [{ index: 0, value: 0x10000000n, valueTwo: 0xffff_ffff_ffff_ffffn, op: SeccompOp.MASKED_EQ }],
        },
        { names: ['keyctl', 'add_key'], action: SeccompAction.ERRNO, errnoRet: 38, args: [] },
      ],
    },
  },
  readonlyRootfs: false,
  resources: {
    cpuPeriod: 100000n,
    cpuQuota: 50000n,
    cpuShares: 0n,
    memoryLimit: 64n << 20n,
    memorySwapLimit: 0n,
    cpusetCpus: '',
    cpusetMems: '',
    unified: [{ key: 'pids.max', value: '100' }],
  },
  maskedPaths: [],
  readonlyPaths: ['/proc/sys'],
  sharePidNamespace: false,
  shareIpcNamespace: true,
};

describe('agent protocol codec', () => {
  it('round-trips nested, repeated and 64-bit fields', () => {
    expect(decodeBody('CreateContainer', encodeBody('CreateContainer', create))).toEqual(create);
  });

  it('fills defaults for absent fields and skips unknown tags', () => {
    const payload = Buffer.concat([
      Buffer.from([99, 0, 3, 0, 0, 0, 1, 2, 3]), // tag 99: a field from a newer peer
      encodeBody('ContainerExited', {
        container: {
          id: 'x',
          status: ContainerStatus.EXITED,
          pid: 7,
          exitCode: -1,
          signal: 9,
          oomKilled: true,
          startedAt: 1n,
          finishedAt: 2n,
          outputEnd: 0n,
        },
      }),
    ]);
    const body = decodeBody('ContainerExited', payload);
    expect(body.container.exitCode).toBe(-1);
    expect(body.container.outputEnd).toBe(0n);
    expect(decodeBody('Hello', Buffer.alloc(0))).toEqual({ hostTime: 0n, resume: [], entropy: Buffer.alloc(0) });
  });

  it('refuses an integer field of the wrong width', () => {
    const pidOfTwoBytes = Buffer.from([1, 0, 2, 0, 0, 0, 1, 2]);
    expect(() => decodeBody('ExecReply', pidOfTwoBytes)).toThrow(/u32 field has 2 bytes/);
  });
});

describe('agent frames', () => {
  const frame = (id: number, text: string) =>
    encodeFrame({
      type: MessageType.AgentLog,
      id,
      payload: encodeBody('AgentLog', { level: 2, message: text }),
    });

  it('reassembles frames split across chunks', () => {
    const d = new FrameDecoder();
    const bytes = Buffer.concat([frame(0, 'one'), frame(0, 'two')]);
    const got = [];
    for (let i = 0; i < bytes.length; i += 7) got.push(...d.push(bytes.subarray(i, i + 7)));
    expect(got.map((f) => decodeBody('AgentLog', f.payload).message)).toEqual(['one', 'two']);
    expect(d.skipped).toBe(0);
  });

  it('resynchronises after a torn frame', () => {
    const d = new FrameDecoder();
    const torn = frame(0, 'lost in a reconnect').subarray(0, 30);
    const got = d.push(Buffer.concat([Buffer.from('garbage'), torn, frame(5, 'after')]));
    expect(got).toHaveLength(1);
    expect(got[0]?.id).toBe(5);
    expect(decodeBody('AgentLog', got[0]!.payload).message).toBe('after');
    expect(d.skipped).toBeGreaterThan(30);
  });

  it('drops a frame whose CRC does not match', () => {
    const d = new FrameDecoder();
    const bad = frame(0, 'flipped');
    bad.writeUInt8(bad.readUInt8(bad.length - 1) ^ 0xff, bad.length - 1);
    expect(d.push(Buffer.concat([bad, frame(0, 'good')])).map((f) => f.id)).toEqual([0]);
  });
});
