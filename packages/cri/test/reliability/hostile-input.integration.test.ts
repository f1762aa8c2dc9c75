import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig } from '../helpers/cri.js';
import { BUSYBOX, type TestShim } from '../helpers/shim.js';
import { allLeaks, shimPid, startPrivateDockerd, startReliabilityShim, type PrivateDockerd } from './harness.js';
import {
  asBytes,
  byteMutations,
  confine,
  encode,
  loadWireSchema,
  messageArb,
  mutateBytes,
  nearValidArb,
  RawCriClient,
  type FuzzTargets,
  type WireAnswer,
  type WireMethod,
  type WireSchema,
  utf8Strings,
} from './wire-fuzz.js';

/** Requests sent by the generated-input property: 1,500 in CI; `HCR_FUZZ_RUNS=10000` for the full figure. */
const REQUESTS = Number(process.env['HCR_FUZZ_RUNS'] ?? 1500);
/** fast-check seed, to replay a run (printed at the end of every run). */
const SEED = process.env['HCR_FUZZ_SEED'] === undefined ? Date.now() % 2 ** 31 : Number(process.env['HCR_FUZZ_SEED']);
/** `HCR_FUZZ_DEBUG=<regex>` prints the outcome of every request to a method matching it. */
const DEBUG = process.env['HCR_FUZZ_DEBUG'] === undefined ? null : new RegExp(process.env['HCR_FUZZ_DEBUG']);
/** Requests in flight at once (each batch may repeat one request to race it against itself). */
const BATCH = 4;

/** Codes a bad request may get. UNKNOWN, INTERNAL, UNAVAILABLE, CANCELLED or a client deadline mean HCR failed. */
const FITTING = new Set<number>([
  status.OK,
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.FAILED_PRECONDITION,
  status.UNIMPLEMENTED,
  status.RESOURCE_EXHAUSTED,
  status.OUT_OF_RANGE,
]);
/** grpc-js's own answer to bytes that are not a message of the method's type (gRPC's status-code table: INTERNAL). */
const UNDECODABLE = 'Error deserializing request';

/** Methods that change or destroy what they name: the fuzz must not aim them at its anchor pod. */
const DESTRUCTIVE = new Set(['StopContainer', 'RemoveContainer', 'StopPodSandbox', 'RemovePodSandbox']);

interface Sent {
  readonly method: WireMethod;
  readonly body: Buffer;
  readonly mutated: boolean;
}

const hex = (n: number) => Array.from({ length: n }, () => Math.floor(Math.random() * 16).toString(16)).join('');

/** A JSON summary of a request for failure reports (Buffers shown as text, long values cut). */
function summary(method: WireMethod, body: Buffer): string {
  try {
    const obj = utf8Strings(method.request.toObject(method.request.decode(body), { longs: String }));
    const text = JSON.stringify(obj, (_k, v: unknown) =>
      typeof v === 'string' && v.length > 80 ? `${v.slice(0, 80)}…(${v.length})` : v,
    );
    return `${method.name} ${text.slice(0, 600)}`;
  } catch {
    return `${method.name} <${body.length} undecodable bytes>`;
  }
}

// Generated and mutated CRI requests through the real socket, against a shim on
// the docker engine with a live anchor pod to aim at. HCR must answer every one
// with a fitting status, never crash, and keep no half-made object.
describe('hostile CRI input over the real socket', () => {
  let dockerd: PrivateDockerd;
  let shim: TestShim;
  let c: ReturnType<typeof cri>;
  let raw: RawCriClient;
  let schema: WireSchema;
  let root: string;
  let targets: FuzzTargets;
  let anchorConfig: ReturnType<typeof podConfig>;
  let pid: number;

  beforeAll(async () => {
    dockerd = await startPrivateDockerd();
    shim = await startReliabilityShim(5);
    c = cri(shim);
    await c.pull(BUSYBOX);
    root = mkdtempSync(join(tmpdir(), 'hcr-fuzz-'));
    anchorConfig = podConfig({ logDirectory: join(root, 'anchor') });
    const podId = await c.runp(anchorConfig);
    const containerId = await c.create(
      podId,
      containerConfig(BUSYBOX, { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] }),
      anchorConfig,
    );
    await c.start(containerId);
    targets = { podId, containerId, images: [BUSYBOX], pathRoot: root };
    schema = loadWireSchema();
    raw = new RawCriClient(shim.socket);
    pid = shimPid(shim);
  }, 300_000);

  afterAll(async () => {
    raw?.close();
    await shim?.stop();
    await dockerd?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  }, 120_000);

  /**
   * Keeps a generated request off the host: absolute host paths are confined
   * to the fuzz's temp dir, host ports to a private range, no cgroup parent,
   * image pulls only from the loopback registry, execs short and harmless,
   * and destructive calls away from the anchor.
   */
  function makeSafe(method: WireMethod, value: Record<string, unknown>): Record<string, unknown> {
    const walk = (v: unknown, key: string): unknown => {
      if (Buffer.isBuffer(v)) {
        if (key === 'hostPath' || key === 'logDirectory' || key === 'localhostRef') return confine(v, root);
        if (key === 'seccompProfilePath' || key === 'apparmorProfile') {
          const s = v.toString('utf8');
          return s.startsWith('localhost/')
            ? Buffer.concat([Buffer.from('localhost/'), confine(Buffer.from(s.slice(10)), root) as Buffer])
            : v;
        }
        if (key === 'cgroupParent') return v.includes(0) ? v : Buffer.alloc(0);
        if (DESTRUCTIVE.has(method.name) && (key === 'podSandboxId' || key === 'containerId')) {
          const s = v.toString('utf8');
          return s === targets.podId || s === targets.containerId ? Buffer.from(hex(64)) : v;
        }
        return v;
      }
      if (key === 'hostPort' && typeof v === 'number' && v >= 1 && v <= 65535) return 45_000 + (v % 100);
      if (Array.isArray(v)) return v.map((x) => walk(x, key));
      if (typeof v === 'object' && v !== null)
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
      return v;
    };
    const out = walk(asBytes(method.request, value), '') as Record<string, unknown>;
    if (method.name === 'PullImage' || method.name === 'RemoveImage') {
      const image = (out['image'] ?? {}) as Record<string, unknown>;
      const ref = Buffer.isBuffer(image['image']) ? image['image'] : Buffer.alloc(0);
      // A pull goes to the loopback registry only; a removal never hits the images the suite uses.
      out['image'] = { ...image, image: Buffer.concat([Buffer.from('127.0.0.1:5000/hcr-fuzz/'), ref]) };
    }
    if (method.name === 'ExecSync' || method.name === 'Exec') {
      const args = Array.isArray(out['cmd']) ? (out['cmd'] as unknown[]).slice(0, 4) : [];
      out['cmd'] = [Buffer.from('echo'), ...args];
      if (method.name === 'ExecSync') {
        const t = Number(out['timeout'] ?? 0);
        out['timeout'] = String(1 + (Number.isFinite(t) ? Math.abs(t) % 3 : 0));
      }
    }
    return out;
  }

  /** A request the kubelet could have sent, to overlay hostile fields onto (so validation is passed often). */
  function base(method: WireMethod): Record<string, unknown> {
    const pod = podConfig({ logDirectory: join(root, 'pods') });
    switch (method.name) {
      case 'RunPodSandbox':
        return { config: pod };
      case 'CreateContainer':
        return {
          podSandboxId: targets.podId,
          config: containerConfig(BUSYBOX, { command: ['true'], logPath: 'c.log' }),
          sandboxConfig: anchorConfig,
        };
      case 'ExecSync':
        return { containerId: targets.containerId, cmd: ['echo', 'x'], timeout: '2' };
      case 'Exec':
        return { containerId: targets.containerId, cmd: ['echo'], stdout: true };
      case 'Attach':
        return { containerId: targets.containerId, stdout: true };
      case 'PortForward':
        return { podSandboxId: targets.podId, port: [80] };
      case 'ImageStatus':
      case 'PullImage':
        return { image: { image: BUSYBOX } };
      default:
        if (method.request.fields['containerId'] !== undefined) return { containerId: targets.containerId };
        if (method.request.fields['podSandboxId'] !== undefined) return { podSandboxId: targets.podId };
        return {};
    }
  }

  /** Removes whatever a request made, so the next checks see only the anchor. */
  async function undo(sent: Sent, answer: WireAnswer): Promise<void> {
    if (answer.code !== status.OK || answer.response === null) return;
    if (sent.method.name === 'RunPodSandbox') await c.rmp(String(answer.response['podSandboxId']));
    if (sent.method.name === 'CreateContainer') await c.rm(String(answer.response['containerId']));
  }

  it('refuses labels and annotations over 256 KiB with INVALID_ARGUMENT, and requests over 16 MiB with RESOURCE_EXHAUSTED', async () => {
    const runp = schema.method('RunPodSandbox');
    const big = (bytes: number) => ({ big: Buffer.alloc(bytes, 0x61) });
    const over = await raw.call(runp, encode(runp.request, { config: podConfig({ annotations: big(300 * 1024) }) }));
    expect(over).toMatchObject({ code: status.INVALID_ARGUMENT });
    expect(over.details).toMatch(/labels and annotations total \d+ bytes; the limit is 262144/);
    const create = schema.method('CreateContainer');
    const labelled = await raw.call(
      create,
      encode(create.request, {
        podSandboxId: targets.podId,
        config: containerConfig(BUSYBOX, { labels: big(300 * 1024) }),
        sandboxConfig: anchorConfig,
      }),
    );
    expect(labelled).toMatchObject({ code: status.INVALID_ARGUMENT });
    // Many small entries count the same as one big one.
    const many = Object.fromEntries(Array.from({ length: 40_000 }, (_, i) => [`label-${i}`, 'v']));
    expect(await raw.call(runp, encode(runp.request, { config: podConfig({ labels: many }) }))).toMatchObject({
      code: status.INVALID_ARGUMENT,
    });
    // Past the gRPC limit the request never reaches HCR's handlers.
    const huge = await raw.call(
      runp,
      encode(runp.request, { config: podConfig({ annotations: big(17 * 1024 * 1024) }) }),
    );
    expect(huge.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(huge.details).toMatch(/larger than max/i);
    const pods = (await c.rt<{ items: { id: string }[] }>('ListPodSandbox', {})).items.map((p) => p.id);
    expect(pods).toEqual([targets.podId]);
  }, 120_000);

  it('cuts status messages that quote a huge request value, so the connection survives', async () => {
    const status_ = schema.method('ContainerStatus');
    const version = schema.method('Version');
    for (const n of [100_000, 1_000_000]) {
      const a = await raw.call(status_, encode(status_.request, { containerId: 'x'.repeat(n) }), 10_000);
      expect(a.code).toBe(status.NOT_FOUND);
      expect(Buffer.byteLength(a.details)).toBeLessThanOrEqual(4096);
      expect(a.details).toMatch(/more bytes cut\)$/);
      // Same connection: a trailer over the client's header limit would have dropped it.
      expect((await raw.call(version, encode(version.request, {}), 5_000)).code).toBe(status.OK);
    }
  }, 60_000);

  it('lets exactly one of concurrent identical creates win; the rest are ALREADY_EXISTS, and concurrent removes all succeed', async () => {
    const config = podConfig({ logDirectory: join(root, 'dup') });
    const runs = await Promise.allSettled(Array.from({ length: 8 }, () => c.runp(config)));
    const won = runs.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<string>).value);
    expect(won).toHaveLength(1);
    const podId = won[0]!;
    expect(runs.filter((r) => r.status === 'rejected').map((r) => (r.reason as { code: number }).code)).toEqual(
      Array(7).fill(status.ALREADY_EXISTS),
    );
    const cc = containerConfig(BUSYBOX, { command: ['sleep', '60'] });
    const creates = await Promise.allSettled(Array.from({ length: 8 }, () => c.create(podId, cc, config)));
    const made = creates
      .filter((r) => r.status === 'fulfilled')
      .map((r) => (r as PromiseFulfilledResult<string>).value);
    expect(made).toHaveLength(1);
    expect(creates.filter((r) => r.status === 'rejected').map((r) => (r.reason as { code: number }).code)).toEqual(
      Array(7).fill(status.ALREADY_EXISTS),
    );
    const starts = await Promise.allSettled(Array.from({ length: 4 }, () => c.start(made[0]!)));
    expect(starts.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(starts.filter((r) => r.status === 'rejected').map((r) => (r.reason as { code: number }).code)).toEqual(
      Array(3).fill(status.FAILED_PRECONDITION),
    );
    const removes = await Promise.allSettled(Array.from({ length: 8 }, () => c.rmp(podId)));
    expect(removes.filter((r) => r.status === 'rejected')).toEqual([]);
    const pods = (await c.rt<{ items: { id: string }[] }>('ListPodSandbox', {})).items.map((p) => p.id);
    expect(pods).toEqual([targets.podId]);
  }, 120_000);

  it('reads invalid UTF-8 in a string field as U+FFFD, like protobuf decoders that do not reject it', async () => {
    const runp = schema.method('RunPodSandbox');
    const config = podConfig({ logDirectory: join(root, 'utf8') });
    const name = Buffer.from([0x66, 0xff, 0x67]);
    const a = await raw.call(
      runp,
      encode(runp.request, { config: { ...config, metadata: { ...config.metadata, name } } }),
    );
    expect(a.code).toBe(status.OK);
    const id = String(a.response?.['podSandboxId']);
    const st = await c.rt<{ status: { metadata: { name: string } } }>('PodSandboxStatus', { podSandboxId: id });
    expect(st.status.metadata.name).toBe('f\uFFFDg');
    await c.rmp(id);
  }, 120_000);

  it(
    `answers ${REQUESTS} generated and mutated requests with a fitting status, never crashing or leaving objects behind`,
    async () => {
      const issues = new Map<string, string>();
      const counts = { sent: 0, ok: 0, mutated: 0, undecodable: 0, made: 0, byCode: new Map<number, number>() };
      const arbs = new Map(
        schema.methods.map((m) => [
          m,
          fc.oneof(
            // Missing, contradictory and random fields everywhere.
            { weight: 7, arbitrary: messageArb(m.request, targets, 0.5).map((v) => ({ v, mut: null })) },
            // A request the kubelet could send, with one to three fields anywhere made hostile.
            { weight: 10, arbitrary: nearValidArb(m.request, base(m), targets).map((v) => ({ v, mut: null })) },
            // The same, then damaged as bytes.
            {
              weight: 3,
              arbitrary: fc
                .tuple(nearValidArb(m.request, base(m), targets), byteMutations)
                .map(([v, mut]) => ({ v, mut })),
            },
          ),
        ]),
      );
      // Requests that make things, and so reach the engine and CNI, are drawn more often.
      const weight = (m: WireMethod) =>
        ({ RunPodSandbox: 5, CreateContainer: 5, UpdateContainerResources: 2, ExecSync: 2 })[m.name] ?? 1;
      const one = fc
        .oneof(...schema.methods.map((m) => ({ weight: weight(m), arbitrary: fc.constant(m) })))
        .chain((m) => arbs.get(m)!.map((g) => ({ m, g })))
        .map(({ m, g }): Sent => {
          const safe = encode(m.request, makeSafe(m, g.v));
          if (g.mut === null) return { method: m, body: safe, mutated: false };
          const body = mutateBytes(safe, g.mut);
          // Damage can turn a confined path into a host path: resend such bodies as their safe re-encoding.
          try {
            const decoded = m.request.toObject(m.request.decode(body)) as Record<string, unknown>;
            const again = encode(m.request, makeSafe(m, decoded));
            return { method: m, body: again.equals(encode(m.request, decoded)) ? body : again, mutated: true };
          } catch {
            return { method: m, body, mutated: true };
          }
        });
      const batch = fc
        .tuple(fc.array(one, { minLength: BATCH, maxLength: BATCH }), fc.integer({ min: 0, max: BATCH - 1 }))
        .map(([list, dup]) => list.map((s, i) => (i <= dup ? list[0]! : s)));

      await fc.assert(
        fc.asyncProperty(batch, async (sentList) => {
          const answers = await Promise.all(sentList.map((s) => raw.call(s.method, s.body, 60_000)));
          const oks = new Map<string, number>();
          for (const [i, s] of sentList.entries()) {
            const a = answers[i]!;
            counts.sent++;
            if (s.mutated) counts.mutated++;
            counts.byCode.set(a.code, (counts.byCode.get(a.code) ?? 0) + 1);
            if (DEBUG?.test(s.method.name) === true)
              console.log(s.method.name, status[a.code], a.details.slice(0, 160));
            const fits = FITTING.has(a.code) || (s.mutated && a.code === status.INTERNAL && a.details === UNDECODABLE);
            if (a.code === status.INTERNAL && a.details === UNDECODABLE) counts.undecodable++;
            if (!fits) {
              const key = `${s.method.name} ${a.code} ${a.details.slice(0, 120)}`;
              if (!issues.has(key))
                issues.set(key, `${status[a.code]} ${a.details}\n    request: ${summary(s.method, s.body)}`);
            }
            if (a.code === status.OK) {
              counts.ok++;
              const k = `${s.method.name}:${s.body.toString('base64')}`;
              if (s.method.name === 'RunPodSandbox' || s.method.name === 'CreateContainer') {
                oks.set(k, (oks.get(k) ?? 0) + 1);
                counts.made++;
              }
            }
          }
          for (const [k, n] of oks)
            if (n > 1) issues.set(`dup ${k.slice(0, 60)}`, `${n} identical concurrent creates all succeeded`);
          for (const [i, s] of sentList.entries()) await undo(s, answers[i]!);
        }),
        { numRuns: Math.ceil(REQUESTS / BATCH), seed: SEED, endOnFailure: true },
      );

      const codes = [...counts.byCode].map(([code, n]) => `${status[code]}=${n}`).join(' ');
      console.log(
        `hostile input: ${counts.sent} requests (seed ${SEED}; ${counts.mutated} byte-mutated, ${counts.undecodable} undecodable), ` +
          `${counts.ok} OK of which ${counts.made} made a pod or container (removed again); ${codes}`,
      );
      expect([...issues.values()]).toEqual([]);
      expect(counts.sent).toBeGreaterThanOrEqual(REQUESTS);

      // Still the same process, still answering, and nothing left but the anchor.
      expect(shimPid(shim)).toBe(pid);
      expect((await c.rt<{ runtimeName: string }>('Version', {})).runtimeName).toBe('hcr');
      const pods = (await c.rt<{ items: { id: string }[] }>('ListPodSandbox', {})).items.map((p) => p.id);
      for (const id of pods.filter((p) => p !== targets.podId)) {
        // Say what was left and what the shim logged about it before failing.
        const st = await c.podStatus(id).catch((e: unknown) => String(e));
        const said = shim
          .logs()
          .split('\n')
          .filter((l) => l.includes(id.slice(0, 12)) && /"level":[45]0/.test(l));
        console.log(`left behind: ${id}`, JSON.stringify(st).slice(0, 2000), said.join('\n').slice(0, 4000));
      }
      expect(pods).toEqual([targets.podId]);
      const containers = (await c.rt<{ containers: { id: string }[] }>('ListContainers', {})).containers;
      expect(containers.map((x) => x.id)).toEqual([targets.containerId]);
      await c.rmp(targets.podId);
      expect(allLeaks(shim)).toEqual([]);
      targets = { ...targets, podId: '', containerId: '' };
    },
    Math.max(600_000, REQUESTS * 200),
  );
});
