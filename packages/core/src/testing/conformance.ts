import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RuntimeEngine } from '../engine.js';
import type { ResultAsync } from 'neverthrow';
import type { ErrorCode, HcrError } from '../errors.js';
import type { ImageService } from '../images/types.js';
import { parseCriLogLine } from '../logs/cri-log.js';
import type { NetworkManager } from '../network/types.js';
import { RuntimeService } from '../runtime/service.js';
import { SqliteStateStore } from '../store/sqlite.js';
import type { ContainerSpec } from '../types.js';
import { containerSpec, podSpec } from './specs.js';

/** How to make the engine's test workload do things, as container command/args. */
export interface Workload {
  /** Image reference (already pullable/pulled through `images`). */
  readonly image: string;
  /** A container that keeps running until stopped. */
  readonly longRunning: Pick<ContainerSpec, 'command' | 'args'>;
  /** A container that prints `text` on stdout and exits 0. */
  echo(text: string): Pick<ContainerSpec, 'command' | 'args'>;
  /** A container that exits with `code` soon after starting. */
  exitWith(code: number): Pick<ContainerSpec, 'command' | 'args'>;
}

/** What a conformance run needs; the engine package provides it with its real engine. */
export interface ConformanceHarness {
  readonly engine: RuntimeEngine;
  readonly images: ImageService;
  readonly network: NetworkManager;
  readonly workload: Workload;
  /** Lists anything the engine left behind (processes, containers, netns, mounts); empty = clean. */
  leaks(): Promise<readonly string[]>;
  /** Releases the harness (closes the engine). */
  close(): Promise<void>;
}

/** Options of {@link engineConformanceSuite}. */
export interface ConformanceOptions {
  /** Suite title, usually the engine kind. */
  readonly name: string;
  /** Creates the harness once for the suite. */
  readonly setup: () => Promise<ConformanceHarness>;
  /** Seconds to wait for asynchronous state changes (VM engines boot slowly under emulation). */
  readonly timeoutSeconds?: number;
}

/**
 * The engine conformance kit: one shared vitest suite that every engine —
 * built-in or plugin — runs against its real implementation. It drives the
 * engine through core's RuntimeService (as the CRI shim does) and checks
 * lifecycle, CRI idempotency rules, errors, logs, exit codes, capability
 * honesty and that nothing leaks.
 */
export function engineConformanceSuite(options: ConformanceOptions): void {
  const timeout = (options.timeoutSeconds ?? 60) * 1000;
  describe(`engine conformance: ${options.name}`, () => {
    let h: ConformanceHarness;
    let rt: RuntimeService;
    let store: SqliteStateStore;
    let dir: string;
    const pods: string[] = [];

    beforeAll(async () => {
      h = await options.setup();
      dir = mkdtempSync(join(tmpdir(), 'hcr-conformance-'));
      store = new SqliteStateStore(join(dir, 'state.db'));
      rt = new RuntimeService({
        store,
        network: h.network,
        images: h.images,
        engines: new Map([[h.engine.name, h.engine]]),
        router: {
          handlers: { [h.engine.name]: h.engine.name },
          defaultEngine: h.engine.name,
          rules: [],
          deferBinding: false,
          unikernelEngine: null,
        },
        sandboxDir: join(dir, 'sandboxes'),
      });
      const pulled = await h.images.pull(h.workload.image);
      if (pulled.isErr()) throw pulled.error;
    }, timeout * 2);

    afterAll(async () => {
      for (const id of pods) await rt.removePodSandbox(id);
      rt.close();
      store.close();
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    }, timeout * 2);

    const ok = async <T>(p: ResultAsync<T, HcrError>): Promise<T> => {
      const r = await p;
      if (r.isErr()) throw r.error;
      return r.value;
    };
    const failsWith = async <T>(p: ResultAsync<T, HcrError>, code: ErrorCode) => {
      const r = await p;
      expect(r.isErr(), `expected ${code}`).toBe(true);
      if (r.isErr()) {
        expect(r.error.code).toBe(code);
        expect(r.error.message.length).toBeGreaterThan(10);
      }
    };
    const newPod = async (logDirectory = '') => {
      const id = await ok(rt.runPodSandbox(podSpec({ logDirectory })));
      pods.push(id);
      return id;
    };
    const waitExited = async (id: string) => {
      const deadline = Date.now() + timeout;
      for (;;) {
        const v = await ok(rt.containerStatus(id));
        if (v.state === 'exited') return v;
        if (Date.now() > deadline) throw new Error(`container ${id} did not exit within ${timeout} ms`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };

    it('reports health', async () => {
      const health = await ok(h.engine.health());
      expect(health.ready).toBe(true);
    });

    it(
      'runs a pod and a container through the whole lifecycle',
      async () => {
        const pod = await newPod();
        expect((await ok(rt.podSandboxStatus(pod))).state).toBe('ready');
        const cid = await ok(rt.createContainer(pod, containerSpec(h.workload.image, { ...h.workload.longRunning })));
        expect((await ok(rt.containerStatus(cid))).state).toBe('created');
        await ok(rt.startContainer(cid));
        expect((await ok(rt.containerStatus(cid))).state).toBe('running');
        expect(rt.listContainers({ sandboxId: pod }).map((c) => c.record.id)).toEqual([cid]);
        await ok(rt.stopContainer(cid, 2));
        expect((await ok(rt.containerStatus(cid))).state).toBe('exited');
        await ok(rt.removeContainer(cid));
        await failsWith(rt.containerStatus(cid), 'NotFound');
        await ok(rt.stopPodSandbox(pod));
        expect((await ok(rt.podSandboxStatus(pod))).state).toBe('notready');
        await ok(rt.removePodSandbox(pod));
        await failsWith(rt.podSandboxStatus(pod), 'NotFound');
      },
      timeout * 3,
    );

    it(
      'follows the CRI idempotency rules',
      async () => {
        const pod = await newPod();
        const cid = await ok(rt.createContainer(pod, containerSpec(h.workload.image, { ...h.workload.longRunning })));
        await ok(rt.startContainer(cid));
        await failsWith(rt.startContainer(cid), 'FailedPrecondition');
        await ok(rt.removeContainer(cid)); // running: stopped, then removed
        await ok(rt.removeContainer(cid)); // already gone
        await ok(rt.stopPodSandbox(pod));
        await ok(rt.stopPodSandbox(pod));
        await failsWith(rt.createContainer(pod, containerSpec(h.workload.image)), 'FailedPrecondition');
        await ok(rt.removePodSandbox(pod));
        await ok(rt.removePodSandbox(pod));
        await ok(rt.stopPodSandbox('0'.repeat(64)));
      },
      timeout * 3,
    );

    it(
      'refuses bad requests with the right class',
      async () => {
        const pod = await newPod();
        await failsWith(rt.containerStatus('f'.repeat(64)), 'NotFound');
        await failsWith(rt.startContainer('f'.repeat(64)), 'NotFound');
        await failsWith(rt.createContainer(pod, containerSpec('hcr.invalid/never-pulled:1')), 'NotFound');
        await failsWith(
          rt.createContainer(pod, containerSpec(h.workload.image, { name: 'bad/name' })),
          'InvalidArgument',
        );
        const spec = containerSpec(h.workload.image, { ...h.workload.longRunning, name: 'dup' });
        const first = await ok(rt.createContainer(pod, spec));
        await failsWith(rt.createContainer(pod, spec), 'AlreadyExists');
        await ok(rt.removeContainer(first));
        await failsWith(rt.runPodSandbox(podSpec({ name: '' })), 'InvalidArgument');
        await ok(rt.removePodSandbox(pod));
      },
      timeout * 3,
    );

    it(
      'reports exit codes and reasons, and writes CRI logs',
      async () => {
        const logDir = mkdtempSync(join(tmpdir(), 'hcr-conformance-logs-'));
        try {
          const pod = await newPod(logDir);
          const echo = await ok(
            rt.createContainer(
              pod,
              containerSpec(h.workload.image, { ...h.workload.echo('hello-conformance'), logPath: 'echo.log' }),
            ),
          );
          await ok(rt.startContainer(echo));
          const done = await waitExited(echo);
          expect(done.record.exitCode).toBe(0);
          expect(done.record.reason).toBe('Completed');
          const records = readFileSync(join(logDir, 'echo.log'), 'utf8')
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => parseCriLogLine(l));
          expect(records.every((r) => r !== null)).toBe(true);
          expect(records.map((r) => r?.content).join('\n')).toContain('hello-conformance');

          const fail = await ok(
            rt.createContainer(pod, containerSpec(h.workload.image, { ...h.workload.exitWith(3) })),
          );
          await ok(rt.startContainer(fail));
          const failed = await waitExited(fail);
          expect(failed.record.exitCode).toBe(3);
          expect(failed.record.reason).toBe('Error');
          await ok(rt.removePodSandbox(pod));
        } finally {
          rmSync(logDir, { recursive: true, force: true });
        }
      },
      timeout * 3,
    );

    it(
      'is honest about its capabilities',
      async () => {
        const caps = h.engine.capabilities;
        if (!caps.hostNetwork) {
          const spec = podSpec({ runtimeHandler: h.engine.name });
          await failsWith(
            rt.runPodSandbox({
              ...spec,
              linux: { ...spec.linux, namespaces: { ...spec.linux.namespaces, network: 'node' } },
            }),
            'Unsupported',
          );
        }
        if (!caps.privileged) {
          const spec = podSpec({ runtimeHandler: h.engine.name });
          await failsWith(rt.runPodSandbox({ ...spec, linux: { ...spec.linux, privileged: true } }), 'Unsupported');
        }
        const pod = await newPod();
        const cid = await ok(rt.createContainer(pod, containerSpec(h.workload.image, { ...h.workload.longRunning })));
        await ok(rt.startContainer(cid));
        if (caps.execSync) {
          const r = await ok(rt.execSync(cid, ['true'], 30));
          expect(r.exitCode).toBe(0);
        } else {
          await failsWith(rt.execSync(cid, ['true'], 5), 'Unsupported');
        }
        if (caps.stats) {
          const s = await ok(rt.containerStats(cid));
          expect(s.stats.memoryUsageBytes).toBeGreaterThan(0);
        }
        await ok(rt.removePodSandbox(pod));
      },
      timeout * 3,
    );

    it(
      'survives a new engine-facing runtime over the same state (restart)',
      async () => {
        const pod = await newPod();
        const cid = await ok(rt.createContainer(pod, containerSpec(h.workload.image, { ...h.workload.longRunning })));
        await ok(rt.startContainer(cid));
        const again = new RuntimeService({
          store,
          network: h.network,
          images: h.images,
          engines: new Map([[h.engine.name, h.engine]]),
          router: { handlers: {}, defaultEngine: h.engine.name, rules: [], deferBinding: false, unikernelEngine: null },
          sandboxDir: join(dir, 'sandboxes'),
        });
        await again.recover();
        expect((await ok(again.containerStatus(cid))).state).toBe('running');
        again.close();
        await ok(rt.removePodSandbox(pod));
      },
      timeout * 3,
    );

    it(
      'leaves nothing behind',
      async () => {
        for (const id of pods.splice(0)) await ok(rt.removePodSandbox(id));
        expect(rt.listPodSandbox()).toEqual([]);
        expect(await h.leaks()).toEqual([]);
        expect(await ok(h.network.listNetns())).toEqual([]);
      },
      timeout * 2,
    );
  });
}
