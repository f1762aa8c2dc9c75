import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server as NetServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { Result } from 'neverthrow';
import * as protoLoader from '@grpc/proto-loader';
import {
  errors,
  normalizeReference,
  nowNanos,
  type ContainerFilter,
  type HcrError,
  type ImageInfo,
  type Logger,
  type RegistryAuth,
  type RuntimeService,
  type SandboxFilter,
} from '@hcr/core';
import {
  containerSpecFromWire,
  containerStatsToWire,
  containerStatusToWire,
  containerToWire,
  imageToWire,
  int,
  resourcesFromWire,
  sandboxInfo,
  sandboxSpecFromWire,
  sandboxStatsToWire,
  sandboxStatusToWire,
  sandboxToWire,
} from './convert.js';
import { rewriteAuthority } from './authority-proxy.js';
import { toServiceError } from './grpc-status.js';
import type { ProtoGrpcType } from './generated/api.js';
import type { ProtoGrpcType as HcrProtoGrpcType } from './generated/progress.js';
import type { PullEvent } from './generated/hcr/v1/PullEvent.js';
import type { WatchPullRequest__Output } from './generated/hcr/v1/WatchPullRequest.js';
import { PullProgressHub } from './pull-progress.js';
import type { ImageServiceHandlers } from './generated/runtime/v1/ImageService.js';
import type { RuntimeServiceHandlers } from './generated/runtime/v1/RuntimeService.js';
import type { AuthConfig__Output } from './generated/runtime/v1/AuthConfig.js';

/** HCR's version, reported by CRI Version. */
export const HCR_VERSION = '0.1.0';

/** URL issuing side of the streaming server (exec/attach/port-forward). */
export interface StreamingUrls {
  execUrl(req: {
    containerId: string;
    cmd: readonly string[];
    tty: boolean;
    stdin: boolean;
    stdout: boolean;
    stderr: boolean;
  }): string;
  attachUrl(req: { containerId: string; tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean }): string;
  portForwardUrl(req: { sandboxId: string; ports: readonly number[] }): string;
}

/** Observes each CRI call (metrics). */
export type CallObserver = (method: string, seconds: number, code: grpc.status) => void;

/** What the CRI server is built from. */
export interface CriServerOptions {
  readonly runtime: RuntimeService;
  readonly streaming: StreamingUrls | null;
  readonly logger: Logger;
  readonly maxMessageBytes: number;
  /** RuntimeClass handler names from config, reported by Status. */
  readonly runtimeHandlers: readonly string[];
  readonly observe?: CallObserver;
  /** Extra key/values for verbose Status (config, engines). */
  readonly statusInfo?: () => Record<string, string>;
}

/** Path of the CRI v1 .proto shipped with this package. */
export function protoPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/ and dist/ both sit one level below the package root.
  return join(here, '..', 'proto');
}

/** Loads the CRI v1 service definitions. */
export function loadCriProto(): ProtoGrpcType {
  return loadProto('runtime/v1/api.proto') as ProtoGrpcType;
}

/** Loads HCR's own service definitions (pull progress), served beside CRI on the same socket. */
export function loadHcrProto(): HcrProtoGrpcType {
  return loadProto('hcr/v1/progress.proto') as HcrProtoGrpcType;
}

/** One of the package's .proto files, decoded as the generated types expect (camelCase, longs and enums as strings). */
function loadProto(file: string): unknown {
  const def = protoLoader.loadSync(file, {
    includeDirs: [protoPath()],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => void;

/**
 * The CRI v1 gRPC server: decodes, validates, calls the RuntimeService and
 * encodes. No handler can crash the process: everything thrown becomes a gRPC
 * status with a message a person can act on.
 */
export class CriServer {
  private readonly server: grpc.Server;
  private socketPath: string | null = null;
  private listener: NetServer | null = null;
  private injector: grpc.ConnectionInjector | null = null;
  /** Progress of the pulls under way, for `hcr.v1.PullProgress/Watch` (`hcr pull`). */
  readonly pullProgress = new PullProgressHub();

  constructor(private readonly opts: CriServerOptions) {
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': opts.maxMessageBytes,
      'grpc.max_send_message_length': opts.maxMessageBytes,
    });
    const proto = loadCriProto();
    this.server.addService(proto.runtime.v1.RuntimeService.service, this.runtimeHandlers());
    this.server.addService(proto.runtime.v1.ImageService.service, this.imageHandlers());
    this.server.addService(loadHcrProto().hcr.v1.PullProgress.service, {
      Watch: (call: grpc.ServerWritableStream<WatchPullRequest__Output, PullEvent>) => this.watchPull(call),
    });
  }

  /** `hcr.v1.PullProgress/Watch`: the pull's state, then each change, until it ends or the client goes. */
  private watchPull(call: grpc.ServerWritableStream<WatchPullRequest__Output, PullEvent>): void {
    const ref = normalizeReference(call.request.image);
    if (ref.isErr()) {
      call.emit('error', toServiceError(ref.error));
      return;
    }
    const stop = this.pullProgress.watch(ref.value, (e) => {
      call.write({ ...e, done: String(e.done), total: String(e.total) });
      if (e.phase === 'done' || e.phase === 'failed') {
        stop();
        call.end();
      }
    });
    call.on('cancelled', () => stop());
    call.on('close', () => stop());
    // Headers tell the client the watch is registered, so it can start the pull without missing its beginning.
    call.sendMetadata(new grpc.Metadata());
  }

  /**
   * Listens on a unix socket (mode 0660, parent dirs created, stale socket
   * replaced). Connections are accepted here and injected into grpc-js through
   * the `:authority` rewriter (see authority-proxy.ts), so crictl/critest
   * builds that send the socket path as authority work too.
   */
  async listen(socketPath: string): Promise<void> {
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
    rmSync(socketPath, { force: true });
    const injector = this.server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.injector = injector;
    const listener = createServer((socket) => injector.injectConnection(rewriteAuthority(socket)));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      // Created 0600 then widened: no window in which others can connect.
      const old = process.umask(0o177);
      listener.listen(socketPath, () => {
        process.umask(old);
        resolve();
      });
    });
    chmodSync(socketPath, 0o660);
    this.listener = listener;
    this.socketPath = socketPath;
  }

  /** Stops accepting calls and waits (bounded) for in-flight ones. */
  async close(graceMs = 5000): Promise<void> {
    const listener = this.listener;
    this.listener = null;
    if (listener !== null) await new Promise<void>((resolve) => listener.close(() => resolve()));
    this.injector?.drain(graceMs);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.socketPath !== null) rmSync(this.socketPath, { force: true });
  }

  private unary<Req, Res>(method: string, fn: (req: Req) => Promise<Res> | Res): Unary<Req, Res> {
    return (call, callback) => {
      const started = process.hrtime.bigint();
      const done = (code: grpc.status) =>
        this.opts.observe?.(method, Number(process.hrtime.bigint() - started) / 1e9, code);
      let p: Promise<Res>;
      try {
        p = Promise.resolve(fn(call.request));
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then(
        (res) => {
          done(grpc.status.OK);
          callback(null, res);
        },
        (e: unknown) => {
          const se = toServiceError(e);
          done(se.code ?? grpc.status.UNKNOWN);
          this.opts.logger.debug({ method, code: se.code, err: se.message }, 'CRI call failed');
          callback(se);
        },
      );
    };
  }

  private unimplemented(method: string, why: string): Unary<unknown, unknown> {
    return this.unary(method, () => {
      throw errors.unsupported('hcr', method, `${method} is not implemented by HCR: ${why}`);
    });
  }

  private runtimeHandlers(): RuntimeServiceHandlers {
    const rt = this.opts.runtime;
    const u = <Req, Res>(m: string, fn: (req: Req) => Promise<Res> | Res) => this.unary<Req, Res>(m, fn);
    const streaming = () => {
      if (this.opts.streaming === null) throw errors.unavailable('the streaming server is not running');
      return this.opts.streaming;
    };
    const id = (v: string, what: string) => {
      if (v === '') throw errors.invalidArgument(`${what} is required`, what);
      return v;
    };
    const unwrapR = async <T>(r: PromiseLike<Result<T, HcrError>>) => {
      const v = await r;
      if (v.isErr()) throw v.error;
      return v.value;
    };
    const handlers: RuntimeServiceHandlers = {
      Version: u('Version', () => ({
        version: '0.1.0',
        runtimeName: 'hcr',
        runtimeVersion: HCR_VERSION,
        runtimeApiVersion: 'v1',
      })),
      Status: u('Status', async (req) => {
        const c = await rt.conditions();
        const info: Record<string, string> = {};
        if (req.verbose) {
          info['engines'] = JSON.stringify(
            Object.fromEntries(
              [...rt.engines].map(([name, e]) => [
                name,
                { kind: e.kind, capabilities: e.capabilities, health: c.engines[name] },
              ]),
            ),
          );
          Object.assign(info, this.opts.statusInfo?.() ?? {});
        }
        return {
          status: {
            conditions: [
              {
                type: 'RuntimeReady',
                status: c.runtimeReady.ready,
                reason: c.runtimeReady.reason,
                message: c.runtimeReady.message,
              },
              {
                type: 'NetworkReady',
                status: c.networkReady.ready,
                reason: c.networkReady.reason,
                message: c.networkReady.message,
              },
            ],
          },
          info,
          runtimeHandlers: [
            { name: '', features: { recursiveReadOnlyMounts: false, userNamespaces: false } },
            ...this.opts.runtimeHandlers.map((name) => ({
              name,
              features: { recursiveReadOnlyMounts: false, userNamespaces: false },
            })),
          ],
          features: { supplementalGroupsPolicy: false },
        };
      }),
      UpdateRuntimeConfig: u('UpdateRuntimeConfig', () => ({})),
      RuntimeConfig: u('RuntimeConfig', () => ({ linux: { cgroupDriver: 'CGROUPFS' as const } })),

      RunPodSandbox: u('RunPodSandbox', async (req) => ({
        podSandboxId: await unwrapR(
          rt.runPodSandbox(sandboxSpecFromWire(req.config ?? null, req.runtimeHandler ?? '')),
        ),
      })),
      StopPodSandbox: u('StopPodSandbox', async (req) => {
        await unwrapR(rt.stopPodSandbox(id(req.podSandboxId ?? '', 'pod_sandbox_id')));
        return {};
      }),
      RemovePodSandbox: u('RemovePodSandbox', async (req) => {
        await unwrapR(rt.removePodSandbox(id(req.podSandboxId ?? '', 'pod_sandbox_id')));
        return {};
      }),
      PodSandboxStatus: u('PodSandboxStatus', async (req) => {
        const view = await unwrapR(rt.podSandboxStatus(id(req.podSandboxId ?? '', 'pod_sandbox_id')));
        return {
          status: sandboxStatusToWire(view),
          info: req.verbose ? sandboxInfo(view) : {},
          containersStatuses: [],
          timestamp: nowNanos().toString(),
        };
      }),
      ListPodSandbox: u('ListPodSandbox', (req) => {
        const f = req.filter;
        const filter: SandboxFilter = {
          ...(f?.id ? { id: f.id } : {}),
          ...(f?.state
            ? { state: f.state.state === 'SANDBOX_READY' ? ('ready' as const) : ('notready' as const) }
            : {}),
          ...(f?.labelSelector && Object.keys(f.labelSelector).length > 0 ? { labels: f.labelSelector } : {}),
        };
        return { items: rt.listPodSandbox(filter).map(sandboxToWire) };
      }),

      CreateContainer: u('CreateContainer', async (req) => ({
        containerId: await unwrapR(
          rt.createContainer(id(req.podSandboxId ?? '', 'pod_sandbox_id'), containerSpecFromWire(req.config ?? null)),
        ),
      })),
      StartContainer: u('StartContainer', async (req) => {
        await unwrapR(rt.startContainer(id(req.containerId ?? '', 'container_id')));
        return {};
      }),
      StopContainer: u('StopContainer', async (req) => {
        await unwrapR(rt.stopContainer(id(req.containerId ?? '', 'container_id'), int(req.timeout, 'timeout')));
        return {};
      }),
      RemoveContainer: u('RemoveContainer', async (req) => {
        await unwrapR(rt.removeContainer(id(req.containerId ?? '', 'container_id')));
        return {};
      }),
      ListContainers: u('ListContainers', (req) => {
        const f = req.filter;
        const stateMap = {
          CONTAINER_CREATED: 'created',
          CONTAINER_RUNNING: 'running',
          CONTAINER_EXITED: 'exited',
          CONTAINER_UNKNOWN: 'unknown',
        } as const;
        const filter: ContainerFilter = {
          ...(f?.id ? { id: f.id } : {}),
          ...(f?.podSandboxId ? { sandboxId: f.podSandboxId } : {}),
          ...(f?.state ? { state: stateMap[f.state.state] } : {}),
          ...(f?.labelSelector && Object.keys(f.labelSelector).length > 0 ? { labels: f.labelSelector } : {}),
        };
        return { containers: rt.listContainers(filter).map(containerToWire) };
      }),
      ContainerStatus: u('ContainerStatus', async (req) => {
        const view = await unwrapR(rt.containerStatus(id(req.containerId ?? '', 'container_id')));
        return {
          status: containerStatusToWire(view),
          info: req.verbose
            ? {
                info: JSON.stringify({
                  pid: view.pid,
                  sandboxId: view.record.sandboxId,
                  config: view.record.spec,
                  engineData: view.record.engineData,
                }),
              }
            : {},
        };
      }),
      UpdateContainerResources: u('UpdateContainerResources', async (req) => {
        await unwrapR(
          rt.updateContainerResources(id(req.containerId ?? '', 'container_id'), resourcesFromWire(req.linux ?? null)),
        );
        return {};
      }),
      ReopenContainerLog: u('ReopenContainerLog', async (req) => {
        await unwrapR(rt.reopenContainerLog(id(req.containerId ?? '', 'container_id')));
        return {};
      }),
      ExecSync: u('ExecSync', async (req) => {
        const cmd = req.cmd ?? [];
        if (cmd.length === 0) throw errors.invalidArgument('cmd is required', 'cmd');
        const r = await unwrapR(
          rt.execSync(id(req.containerId ?? '', 'container_id'), cmd, int(req.timeout, 'timeout')),
        );
        return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
      }),
      Exec: u('Exec', async (req) => {
        const containerId = id(req.containerId ?? '', 'container_id');
        const cmd = req.cmd ?? [];
        if (cmd.length === 0) throw errors.invalidArgument('cmd is required', 'cmd');
        const stdin = req.stdin ?? false;
        const stdout = req.stdout ?? false;
        const stderr = req.stderr ?? false;
        const tty = req.tty ?? false;
        if (!stdin && !stdout && !stderr) throw errors.invalidArgument('one of stdin, stdout, or stderr must be set');
        if (tty && stderr)
          throw errors.invalidArgument('tty and stderr cannot both be set (a TTY merges stderr into stdout)');
        await unwrapR(rt.checkExec(containerId, tty, stdin));
        return { url: streaming().execUrl({ containerId, cmd, tty, stdin, stdout, stderr }) };
      }),
      Attach: u('Attach', async (req) => {
        const containerId = id(req.containerId ?? '', 'container_id');
        const stdin = req.stdin ?? false;
        const stdout = req.stdout ?? false;
        const stderr = req.stderr ?? false;
        const tty = req.tty ?? false;
        if (!stdin && !stdout && !stderr) throw errors.invalidArgument('one of stdin, stdout, or stderr must be set');
        await unwrapR(rt.checkAttach(containerId, stdin));
        return { url: streaming().attachUrl({ containerId, tty, stdin, stdout, stderr }) };
      }),
      PortForward: u('PortForward', async (req) => {
        const sandboxId = id(req.podSandboxId ?? '', 'pod_sandbox_id');
        const ports = (req.port ?? []).map(Number);
        for (const p of ports) {
          if (!Number.isInteger(p) || p <= 0 || p > 65535)
            throw errors.invalidArgument(`port ${p} is out of range 1-65535`, 'port');
        }
        await unwrapR(rt.checkPortForward(sandboxId));
        return { url: streaming().portForwardUrl({ sandboxId, ports }) };
      }),

      ContainerStats: u('ContainerStats', async (req) => {
        const r = await unwrapR(rt.containerStats(id(req.containerId ?? '', 'container_id')));
        return { stats: containerStatsToWire(r.record, r.stats) };
      }),
      ListContainerStats: u('ListContainerStats', async (req) => {
        const f = req.filter;
        const views = rt.listContainers({
          state: 'running',
          ...(f?.id ? { id: f.id } : {}),
          ...(f?.podSandboxId ? { sandboxId: f.podSandboxId } : {}),
          ...(f?.labelSelector && Object.keys(f.labelSelector).length > 0 ? { labels: f.labelSelector } : {}),
        });
        const stats = await Promise.all(
          views.map(async (v) => {
            const r = await rt.containerStats(v.record.id);
            return r.isOk() ? containerStatsToWire(r.value.record, r.value.stats) : null;
          }),
        );
        return { stats: stats.filter((s) => s !== null) };
      }),
      PodSandboxStats: u('PodSandboxStats', async (req) => {
        const r = await unwrapR(rt.podSandboxStats(id(req.podSandboxId ?? '', 'pod_sandbox_id')));
        return { stats: sandboxStatsToWire(r.record, r.stats, r.containers) };
      }),
      ListPodSandboxStats: u('ListPodSandboxStats', async (req) => {
        const f = req.filter;
        const views = rt.listPodSandbox({
          state: 'ready',
          ...(f?.id ? { id: f.id } : {}),
          ...(f?.labelSelector && Object.keys(f.labelSelector).length > 0 ? { labels: f.labelSelector } : {}),
        });
        const stats = await Promise.all(
          views.map(async (v) => {
            const r = await rt.podSandboxStats(v.record.id);
            return r.isOk() ? sandboxStatsToWire(r.value.record, r.value.stats, r.value.containers) : null;
          }),
        );
        return { stats: stats.filter((s) => s !== null) };
      }),

      CheckpointContainer: this.unimplemented('CheckpointContainer', 'checkpoint/restore is not supported'),
      CheckpointPod: this.unimplemented('CheckpointPod', 'checkpoint/restore is not supported'),
      RestorePod: this.unimplemented('RestorePod', 'checkpoint/restore is not supported'),
      UpdatePodSandboxResources: u('UpdatePodSandboxResources', () => ({})),
      ListMetricDescriptors: u('ListMetricDescriptors', () => ({ descriptors: [] })),
      ListPodSandboxMetrics: u('ListPodSandboxMetrics', () => ({ podMetrics: [] })),
      GetContainerEvents: (call) => {
        call.emit(
          'error',
          toServiceError(
            errors.unsupported(
              'hcr',
              'GetContainerEvents',
              'GetContainerEvents (evented PLEG) is not implemented by HCR; the kubelet falls back to polling',
            ),
          ),
        );
      },
      StreamContainers: unimplementedStream('StreamContainers'),
      StreamPodSandboxes: unimplementedStream('StreamPodSandboxes'),
      StreamContainerStats: unimplementedStream('StreamContainerStats'),
      StreamPodSandboxStats: unimplementedStream('StreamPodSandboxStats'),
      StreamPodSandboxMetrics: unimplementedStream('StreamPodSandboxMetrics'),
    } as RuntimeServiceHandlers;
    return handlers;
  }

  private imageHandlers(): ImageServiceHandlers {
    const images = this.opts.runtime.images;
    const u = <Req, Res>(m: string, fn: (req: Req) => Promise<Res> | Res) => this.unary<Req, Res>(m, fn);
    const unwrapR = async <T>(r: PromiseLike<Result<T, HcrError>>) => {
      const v = await r;
      if (v.isErr()) throw v.error;
      return v.value;
    };
    const imageRef = (spec: { image?: string } | null | undefined) => {
      const ref = spec?.image ?? '';
      if (ref === '') throw errors.invalidArgument('image.image is required', 'image');
      return ref;
    };
    const handlers: ImageServiceHandlers = {
      ListImages: u('ListImages', async (req) => {
        const all = await unwrapR(images.list());
        const want = req.filter?.image?.image ?? '';
        let list: readonly ImageInfo[] = all;
        if (want !== '') {
          const one = await unwrapR(images.status(want));
          list = one === null ? [] : [one];
        }
        return { images: list.map(imageToWire) };
      }),
      ImageStatus: u('ImageStatus', async (req) => {
        const img = await unwrapR(images.status(imageRef(req.image)));
        if (img === null) return { info: {} };
        return {
          image: imageToWire(img),
          info: req.verbose ? { info: JSON.stringify({ config: img.config, kind: img.kind }) } : {},
        };
      }),
      PullImage: u('PullImage', async (req) => {
        const ref = imageRef(req.image);
        const auth = authFromWire(req.auth ?? null);
        const canonical = normalizeReference(ref).unwrapOr('');
        const pulled = await images.pull(ref, {
          ...(auth ? { auth } : {}),
          onProgress: (p) => {
            if (p.phase === 'done' || p.phase === 'resolving')
              this.opts.logger.info({ image: ref, phase: p.phase }, 'pull');
            this.pullProgress.publish({ ...p, error: '' });
          },
        });
        if (pulled.isErr()) {
          if (canonical !== '') {
            this.pullProgress.publish({
              ref: canonical,
              phase: 'failed',
              layer: '',
              done: 0,
              total: 0,
              error: pulled.error.message,
            });
          }
          throw pulled.error;
        }
        return { imageRef: pulled.value.id };
      }),
      RemoveImage: u('RemoveImage', async (req) => {
        await unwrapR(images.remove(imageRef(req.image)));
        return {};
      }),
      ImageFsInfo: u('ImageFsInfo', async () => {
        const fs = await unwrapR(images.fsInfo());
        const ts = nowNanos().toString();
        return {
          imageFilesystems: fs.map((f) => ({
            timestamp: ts,
            fsId: { mountpoint: f.mountpoint },
            usedBytes: { value: String(f.usedBytes) },
            inodesUsed: { value: String(f.inodesUsed) },
          })),
          containerFilesystems: [],
        };
      }),
      StreamImages: unimplementedStream('StreamImages'),
    } as ImageServiceHandlers;
    return handlers;
  }
}

function unimplementedStream(method: string) {
  return (call: grpc.ServerWritableStream<unknown, unknown>) => {
    call.emit(
      'error',
      toServiceError(errors.unsupported('hcr', method, `${method} is not implemented by HCR; use the unary List call`)),
    );
  };
}

function authFromWire(a: AuthConfig__Output | null): RegistryAuth | null {
  if (a === null) return null;
  if (!a.username && !a.password && !a.auth && !a.identityToken && !a.registryToken) return null;
  return {
    username: a.username,
    password: a.password,
    auth: a.auth,
    serverAddress: a.serverAddress,
    identityToken: a.identityToken,
    registryToken: a.registryToken,
  };
}
