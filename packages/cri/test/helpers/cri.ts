import type { TestShim } from './shim.js';
import { randomBytes } from 'node:crypto';

/** A wire-format PodSandboxConfig with sensible defaults. */
export function podConfig(overrides: Record<string, unknown> = {}, name = `pod-${randomBytes(3).toString('hex')}`) {
  return {
    metadata: { name, uid: randomBytes(8).toString('hex'), namespace: 'hcr-it', attempt: 0 },
    hostname: name,
    labels: { app: name },
    annotations: {},
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    ...overrides,
  };
}

/** A wire-format ContainerConfig. */
export function containerConfig(
  image: string,
  overrides: Record<string, unknown> = {},
  name = `c-${randomBytes(3).toString('hex')}`,
) {
  return { metadata: { name, attempt: 0 }, image: { image }, ...overrides };
}

/** Thin typed wrappers over the CRI calls tests use. */
export function cri(shim: TestShim) {
  const rt = <T = Record<string, unknown>>(m: string, req: object, ms?: number) =>
    shim.client.call<T>('runtime', m, req, ms);
  const img = <T = Record<string, unknown>>(m: string, req: object, ms?: number) =>
    shim.client.call<T>('images', m, req, ms);
  return {
    rt,
    img,
    pull: (image: string) => img<{ imageRef: string }>('PullImage', { image: { image } }, 300_000),
    runp: async (config: object, runtimeHandler = '') =>
      (await rt<{ podSandboxId: string }>('RunPodSandbox', { config, runtimeHandler }, 300_000)).podSandboxId,
    create: async (podSandboxId: string, config: object, sandboxConfig: object) =>
      (await rt<{ containerId: string }>('CreateContainer', { podSandboxId, config, sandboxConfig }, 120_000))
        .containerId,
    start: (containerId: string) => rt('StartContainer', { containerId }, 120_000),
    stop: (containerId: string, timeout = 0) => rt('StopContainer', { containerId, timeout }, 120_000),
    rm: (containerId: string) => rt('RemoveContainer', { containerId }, 120_000),
    stopp: (podSandboxId: string) => rt('StopPodSandbox', { podSandboxId }, 120_000),
    rmp: (podSandboxId: string) => rt('RemovePodSandbox', { podSandboxId }, 120_000),
    status: async (containerId: string) =>
      (
        await rt<{
          status: {
            state: string;
            exitCode: number;
            reason: string;
            logPath: string;
            startedAt: string;
            finishedAt: string;
          };
          info: Record<string, string>;
        }>('ContainerStatus', { containerId, verbose: true })
      ).status,
    podStatus: async (podSandboxId: string) =>
      rt<{ status: { state: string; network: { ip: string } }; info: Record<string, string> }>('PodSandboxStatus', {
        podSandboxId,
        verbose: true,
      }),
    execSync: (containerId: string, cmd: string[], timeout = 30) =>
      rt<{ stdout: Buffer; stderr: Buffer; exitCode: number }>(
        'ExecSync',
        { containerId, cmd, timeout },
        (timeout + 30) * 1000,
      ),
    waitState: async (containerId: string, state: string, timeoutMs = 60_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = (await rt<{ status: { state: string } }>('ContainerStatus', { containerId })).status;
        if (s.state === state) return;
        if (Date.now() > deadline) throw new Error(`container ${containerId} stayed ${s.state}, wanted ${state}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
  };
}

/** Expects a gRPC call to fail with `code` (a grpc status number) and returns the message. */
export async function rejectsWith(p: Promise<unknown>, code: number): Promise<string> {
  try {
    await p;
  } catch (e) {
    const se = e as { code?: number; details?: string };
    if (se.code !== code) throw new Error(`expected gRPC code ${code}, got ${se.code}: ${se.details}`);
    return se.details ?? '';
  }
  throw new Error(`expected gRPC code ${code}, but the call succeeded`);
}
