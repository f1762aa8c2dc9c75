import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import {
  ErrorCode,
  errAsync,
  errors,
  okAsync,
  ResultAsync,
  type EngineContainerStatus,
  type EngineEvent,
  type ExecSyncResult,
  type HcrError,
  type Logger,
  type StreamIO,
} from '@hcr/core';
import { AgentClient, type ReplyTo } from './agent/client.js';
import type { LogSink } from './logs.js';
import {
  ContainerStatus,
  LogLevel,
  PROTOCOL_VERSION,
  Stream,
  type ContainerInfo,
  type HelloReply,
  type Messages,
  type Process,
  type RequestName,
} from './protocol/wire.gen.js';
import type { SandboxRecord } from './state.js';
import { containerStatus } from './translate.js';
import type { VmDriver, VmHandle } from './vm/driver.js';

/** Largest data chunk the host puts in one frame (the agent reads in 32 KiB chunks too). */
const CHUNK = 32 * 1024;

interface ExecWatch {
  onOutput(stream: number, data: Buffer): void;
  onExit(exitCode: number): void;
  onLost(e: HcrError): void;
}

interface PortWatch {
  onData(data: Buffer): void;
  onClose(error: string): void;
  onLost(e: HcrError): void;
}

/** What a pod VM needs from the engine. */
export interface PodDeps {
  readonly driver: VmDriver;
  readonly logger: Logger;
  readonly emit: (event: EngineEvent) => void;
  readonly requestTimeoutMs: number;
}

/** How long a VM whose agent channel closed may take to exit before HCR decides it still runs. */
const EXIT_GRACE_MS = 3_000;

/** Why a pod VM is gone, as its containers' status reports it. */
export interface VmDeath {
  /** CRI reason of the containers that died with the VM. */
  readonly reason: string;
  readonly message: string;
}

/**
 * Reads why a pod VM ended from its console: PID 1 (the agent) dying is a
 * kernel panic "Attempted to kill init" (with `panic=-1 -no-reboot` QEMU
 * then exits at once); another panic is the guest kernel's own; anything
 * else (QEMU killed or crashed) leaves no trace there.
 */
export function vmDeath(podId: string, consoleLog: string): VmDeath {
  const tail = consoleTail(consoleLog, 80);
  const panic = /Kernel panic - not syncing: (.*)/.exec(tail)?.[1]?.trim();
  if (panic?.startsWith('Attempted to kill init') === true) {
    return {
      reason: 'GuestAgentCrashed',
      message:
        `the guest agent of pod ${podId} (PID 1 of its VM) died, the guest kernel panicked ("${panic}") ` +
        `and the VM is gone; console: ${consoleLog}`,
    };
  }
  if (panic !== undefined) {
    return {
      reason: 'GuestKernelPanic',
      message: `the guest kernel of pod ${podId} panicked ("${panic}") and the VM is gone; console: ${consoleLog}`,
    };
  }
  return {
    reason: 'Error',
    message: `the VM of pod ${podId} exited without a guest panic (QEMU killed or failed); console: ${consoleLog}`,
  };
}

/** A container the host created but has no word of from the agent yet. */
function unseenContainer(id: string): ContainerInfo {
  return {
    id,
    status: ContainerStatus.CREATED,
    pid: 0,
    exitCode: 0,
    signal: 0,
    oomKilled: false,
    startedAt: 0n,
    finishedAt: 0n,
    outputEnd: 0n,
  };
}

/** The last lines of a VM's serial console, for messages about a VM that failed. */
export function consoleTail(path: string, lines = 25): string {
  try {
    const text = readFileSync(path, 'utf8').trimEnd();
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return '(no console output)';
  }
}

/**
 * One pod VM as the engine sees it: the VM handle, the agent connection and
 * everything multiplexed over it (container logs, attach, exec and
 * port-forward streams). The connection may drop and come back (an HCR
 * restart creates a new PodVm over the same VM); the VM's life is the pod's.
 */
export class PodVm {
  private client: AgentClient | null = null;
  /** The guest kernel's release, from the agent's last Hello ('' before the first). */
  kernelRelease = '';
  /** What the pod's agent announced beyond the protocol's first release (HelloReply.features). */
  agentFeatures: ReadonlySet<string> = new Set();
  /** The CRI log writers of the pod's containers, by container id. */
  readonly sinks = new Map<string, LogSink>();
  private readonly outputListeners = new Map<string, Set<(stream: number, data: Buffer) => void>>();
  private readonly exitWaiters = new Map<string, Set<(info: ContainerInfo) => void>>();
  private readonly execs = new Map<number, ExecWatch>();
  private readonly ports = new Map<number, PortWatch>();
  /** The agent's last word on each container, for statuses after the VM is gone. */
  private readonly lastKnown = new Map<string, ContainerInfo>();
  /** Containers that were still running when the VM died. */
  private readonly lostWithVm = new Set<string>();
  /** Exited containers whose last output is still on its way: flush their log at this offset. */
  private readonly flushAt = new Map<string, bigint>();
  private nextExecId = 1;
  private nextConnId = 1;
  private reconnectTimer: NodeJS.Timeout | null = null;
  /** Set when HCR stops watching (engine closed, pod stopped): no reconnects, no died event. */
  private detached = false;
  /** Set while the pod is being stopped: the VM going away is expected. */
  private stopping = false;
  /** Why the VM died on its own; null while it runs (or was stopped by HCR). */
  private death: VmDeath | null = null;
  /** Settles once a lost connection is understood (the VM died, or a reconnect is under way). */
  private lostSettled: Promise<void> = Promise.resolve();
  private readonly log: Logger;

  constructor(
    readonly record: SandboxRecord,
    readonly handle: VmHandle,
    private readonly deps: PodDeps,
  ) {
    this.log = deps.logger.child({ podSandboxId: record.id, vmPid: handle.pid });
  }

  /** True while the VM process lives and its guest did not die (a panicked guest may keep QEMU up briefly). */
  get alive(): boolean {
    return this.death === null && this.deps.driver.isAlive(this.handle);
  }

  /** True while an agent connection is up. */
  get connected(): boolean {
    return this.client !== null && !this.client.closed;
  }

  /**
   * Since when (ms since the epoch) the connected agent has let a request
   * time out without a word (hung, or the VM is paused); null while it answers.
   */
  get stalledSince(): number | null {
    return this.client?.stalled ?? null;
  }

  /** Why the VM died on its own, once it did. */
  get died(): VmDeath | null {
    return this.death;
  }

  /** The status of a container as last known, with the cause when it died with the VM. */
  statusOf(info: ContainerInfo): EngineContainerStatus {
    const st = containerStatus(info);
    return this.death !== null && this.lostWithVm.has(info.id)
      ? { ...st, reason: this.death.reason, message: this.death.message }
      : st;
  }

  /**
   * Connects to the agent and greets it: sets the guest clock, tells it how
   * far each container's log was written, and learns what it runs.
   */
  connect(timeoutMs: number): ResultAsync<HelloReply, HcrError> {
    const deadline = Date.now() + timeoutMs;
    return AgentClient.connect(this.deps.driver.agentTransport(this.handle), timeoutMs, this.log).andThen((client) => {
      this.client?.close();
      this.client = client;
      this.subscribe(client);
      const resume = [...this.sinks].map(([containerId, sink]) => ({ containerId, offset: sink.resumeOffset() }));
      return client
        .request(
          'Hello',
          // Fresh entropy on every greeting: a VM started from a template holds the template's RNG state.
          { hostTime: BigInt(Date.now()) * 1_000_000n, resume, entropy: randomBytes(64) },
          Math.max(1, deadline - Date.now()),
        )
        .andThen((hello) =>
          hello.protocolVersion === PROTOCOL_VERSION
            ? okAsync(hello)
            : errAsync(
                errors.failedPrecondition(
                  `the agent of pod ${this.record.id} (${hello.agentVersion}) speaks protocol version ` +
                    `${hello.protocolVersion}, this HCR speaks ${PROTOCOL_VERSION}; recreate the pod`,
                ),
              ),
        )
        .map((hello) => {
          this.kernelRelease = hello.kernelRelease;
          this.agentFeatures = new Set(hello.features);
          for (const c of hello.containers) this.lastKnown.set(c.id, c);
          // Exits that happened while HCR was away: core reconciles them from these events too.
          for (const c of hello.containers) if (c.status === ContainerStatus.EXITED) this.onExited(c);
          return hello;
        })
        .mapErr((e) => {
          // Not a lost connection but a failed greeting: the caller decides whether to retry.
          this.client = null;
          client.close();
          return e;
        });
    });
  }

  /**
   * Sends a request to the agent. Fails with Unavailable when no connection
   * is up, FailedPrecondition (saying why) once the VM died, and
   * DeadlineExceeded (naming the console) when the agent does not answer;
   * a request the connection's loss cut short fails with what the loss
   * turned out to be.
   */
  request<N extends RequestName>(name: N, body: Messages[N], timeoutMs?: number): ResultAsync<ReplyTo<N>, HcrError> {
    const c = this.client;
    if (this.death !== null) return errAsync(errors.failedPrecondition(this.death.message));
    if (c === null || c.closed) {
      return errAsync(
        errors.unavailable(
          this.alive
            ? `the agent of pod ${this.record.id} is not connected; retry shortly`
            : `the VM of pod ${this.record.id} is not running`,
        ),
      );
    }
    return c.request(name, body, timeoutMs ?? this.deps.requestTimeoutMs).orElse((e) => {
      if (e.code === ErrorCode.DeadlineExceeded) {
        return errAsync(
          errors.deadlineExceeded(
            `pod ${this.record.id}: ${e.message}; its VM (pid ${this.handle.pid}) still runs, so the agent is ` +
              `hung or the guest is stalled (console: ${this.handle.consoleLog}); StopPodSandbox kills the VM`,
          ),
        );
      }
      if (!c.closed) return errAsync(e);
      return ResultAsync.fromSafePromise(this.lostSettled).andThen(() =>
        errAsync(this.death === null ? e : errors.failedPrecondition(this.death.message)),
      );
    });
  }

  /** The agent's containers, refreshing what is remembered of them. */
  listContainers(): ResultAsync<readonly ContainerInfo[], HcrError> {
    return this.request('ListContainers', {}).map((r) => {
      for (const c of r.containers) this.lastKnown.set(c.id, c);
      return r.containers;
    });
  }

  /** What the agent said last about a container (null if it never mentioned it). */
  lastInfo(containerId: string): ContainerInfo | null {
    return this.lastKnown.get(containerId) ?? null;
  }

  /** Forgets a removed container. */
  forget(containerId: string): void {
    this.lastKnown.delete(containerId);
    this.flushAt.delete(containerId);
    this.sinks.get(containerId)?.close();
    this.sinks.delete(containerId);
  }

  /**
   * Resolves with the container's info once it exited, or null after
   * `timeoutMs`. Events do the work; a slow poll covers events lost in a
   * reconnect.
   */
  waitExit(containerId: string, timeoutMs: number): Promise<ContainerInfo | null> {
    return new Promise((resolve) => {
      let done = false;
      const set = this.exitWaiters.get(containerId) ?? new Set();
      this.exitWaiters.set(containerId, set);
      const finish = (info: ContainerInfo | null) => {
        if (done) return;
        done = true;
        set.delete(finish);
        clearTimeout(timer);
        clearInterval(poll);
        resolve(info);
      };
      set.add(finish);
      const timer = setTimeout(() => finish(null), timeoutMs);
      const check = () =>
        void this.listContainers().map((cs) => {
          const c = cs.find((x) => x.id === containerId);
          if (c === undefined || c.status === ContainerStatus.EXITED) finish(c ?? null);
        });
      const poll = setInterval(check, 1000);
      check();
    });
  }

  /**
   * Starts an exec and resolves with its exit code. The agent's reply and
   * the exec's exit can arrive in one read (a process that fails at once);
   * an exit seen before the reply was handled waits for it, so a failed
   * start is an error, never an exit code.
   */
  private runExec(
    containerId: string,
    process: Process,
    onOutput: (stream: number, data: Buffer) => void,
    onStarted: (execId: number) => void,
  ): { execId: number; exited: Promise<number> } {
    const execId = this.nextExecId++;
    const exited = new Promise<number>((resolve, reject) => {
      let started = false;
      let earlyExit: number | null = null;
      this.execs.set(execId, {
        onOutput,
        onExit: (code) => {
          if (!started) {
            earlyExit = code;
            return;
          }
          this.execs.delete(execId);
          resolve(code);
        },
        onLost: (e) => {
          this.execs.delete(execId);
          reject(e.withContext(`exec in ${containerId}`));
        },
      });
      void this.request('Exec', { containerId, execId, process }).match(
        () => {
          started = true;
          if (earlyExit !== null) {
            this.execs.delete(execId);
            resolve(earlyExit);
            return;
          }
          onStarted(execId);
        },
        (e) => {
          this.execs.delete(execId);
          reject(e);
        },
      );
    });
    return { execId, exited };
  }

  /** Runs a process in a container with the given streams; resolves with its exit code. */
  async exec(containerId: string, process: Process, io: StreamIO): Promise<number> {
    let execId = 0;
    const onStdin = (chunk: Buffer) => this.sendStdin(containerId, execId, chunk, false);
    const onStdinEnd = () => this.sendStdin(containerId, execId, Buffer.alloc(0), true);
    const { exited } = this.runExec(
      containerId,
      { ...process, tty: io.tty, stdin: io.stdin !== null },
      (stream, data) => (stream === Stream.STDERR && !io.tty ? io.stderr : io.stdout)?.write(data),
      (id) => {
        execId = id;
        io.stdin?.on('data', onStdin);
        io.stdin?.on('end', onStdinEnd);
        io.onResize((size) =>
          this.client?.notify('Resize', { containerId, execId: id, rows: size.height, cols: size.width }),
        );
      },
    );
    try {
      return await exited;
    } finally {
      io.stdin?.removeListener('data', onStdin);
      io.stdin?.removeListener('end', onStdinEnd);
    }
  }

  /**
   * Runs a process without stdin and collects its output (at most `maxOutput`
   * bytes per stream). With a timeout, the process is SIGKILLed when it runs
   * out and the call fails with DeadlineExceeded.
   */
  async execSync(containerId: string, process: Process, timeoutMs: number, maxOutput: number): Promise<ExecSyncResult> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const size = { out: 0, err: 0 };
    let timer: NodeJS.Timeout | null = null;
    let timedOut: (() => void) | null = null;
    const timeout = new Promise<never>((_, reject) => {
      timedOut = () =>
        reject(errors.deadlineExceeded(`command in ${containerId} timed out after ${timeoutMs / 1000} s`));
    });
    const { exited } = this.runExec(
      containerId,
      { ...process, tty: false, stdin: false },
      (stream, data) => {
        const key = stream === Stream.STDERR ? 'err' : 'out';
        const room = maxOutput - size[key];
        if (room <= 0) return;
        (key === 'err' ? err : out).push(data.subarray(0, room));
        size[key] += Math.min(room, data.length);
      },
      (execId) => {
        if (timeoutMs <= 0) return;
        timer = setTimeout(() => {
          this.execs.delete(execId);
          void this.request('SignalExec', { execId, signal: 9 });
          timedOut?.();
        }, timeoutMs);
      },
    );
    // After a timeout nobody awaits the exit any more; a later failure of it must not go unhandled.
    exited.catch(() => undefined);
    try {
      const exitCode = await Promise.race([exited, timeout]);
      return { stdout: Buffer.concat(out), stderr: Buffer.concat(err), exitCode };
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }

  /**
   * Attaches streams to a container's main process: live output, stdin
   * (when the container has one) and resizes. Resolves when the container
   * exits, the caller's output stream closes, or the connection is lost.
   */
  attach(containerId: string, io: StreamIO, opts: { stdin: boolean; stdinOnce: boolean }): Promise<void> {
    return new Promise<void>((resolve) => {
      const listeners = this.outputListeners.get(containerId) ?? new Set();
      this.outputListeners.set(containerId, listeners);
      const onOutput = (stream: number, data: Buffer) =>
        (stream === Stream.STDERR && !io.tty ? io.stderr : io.stdout)?.write(data);
      const onStdin = (chunk: Buffer) => this.sendStdin(containerId, 0, chunk, false);
      const onStdinEnd = () => {
        if (opts.stdinOnce) this.sendStdin(containerId, 0, Buffer.alloc(0), true);
      };
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        listeners.delete(onOutput);
        this.exitWaiters.get(containerId)?.delete(onExit);
        io.stdin?.removeListener('data', onStdin);
        io.stdin?.removeListener('end', onStdinEnd);
        io.stdout?.removeListener('close', finish);
        io.stdout?.removeListener('finish', finish);
        resolve();
      };
      const onExit = () => finish();
      listeners.add(onOutput);
      const waiters = this.exitWaiters.get(containerId) ?? new Set();
      this.exitWaiters.set(containerId, waiters);
      waiters.add(onExit);
      if (opts.stdin) {
        io.stdin?.on('data', onStdin);
        io.stdin?.on('end', onStdinEnd);
      }
      io.onResize((size) =>
        this.client?.notify('Resize', { containerId, execId: 0, rows: size.height, cols: size.width }),
      );
      io.stdout?.once('close', finish);
      io.stdout?.once('finish', finish);
      this.client?.onClose(() => finish());
      const info = this.lastKnown.get(containerId);
      if (info?.status === ContainerStatus.EXITED) finish();
    });
  }

  /**
   * Relays `stream` to 127.0.0.1:port inside the guest (the pod network
   * namespace). Resolves when both directions are closed.
   */
  portForward(port: number, stream: Duplex): Promise<void> {
    const connId = this.nextConnId++;
    return new Promise<void>((resolve, reject) => {
      let localEnded = false;
      const cleanup = () => {
        this.ports.delete(connId);
        stream.removeListener('data', onData);
        stream.removeListener('end', onEnd);
      };
      const onData = (chunk: Buffer) => {
        for (let i = 0; i < chunk.length; i += CHUNK) {
          this.client?.notify('PortData', { connId, data: chunk.subarray(i, i + CHUNK) });
        }
      };
      const onEnd = () => {
        localEnded = true;
        this.client?.notify('PortClose', { connId, error: '' });
      };
      let lost: HcrError | null = null;
      this.ports.set(connId, {
        onData: (data) => stream.write(data),
        onClose: (error) => {
          if (error !== '') stream.destroy(new Error(`port ${port} in the pod: ${error}`));
          else stream.end();
        },
        onLost: (e) => {
          lost = e;
          stream.destroy(e);
        },
      });
      // Errors of the stream end this call (below); they must not also surface as unhandled.
      stream.on('error', () => undefined);
      stream.once('close', () => {
        if (!localEnded) this.client?.notify('PortClose', { connId, error: 'the client went away' });
        cleanup();
        if (lost !== null) reject(lost);
        else resolve();
      });
      void this.request('PortForward', { connId, port }).match(
        () => {
          stream.on('data', onData);
          stream.once('end', onEnd);
        },
        (e) => {
          // The caller keeps its stream: it answers the client with the error.
          cleanup();
          stream.removeAllListeners('close');
          reject(e);
        },
      );
    });
  }

  /** Keeps trying to connect in the background (the agent did not answer at engine start). */
  reconnectLater(): void {
    this.scheduleReconnect(1);
  }

  /** Marks the VM's end as expected (StopPodSandbox): no reconnect, no "died" event. */
  beginStop(): void {
    this.stopping = true;
  }

  /**
   * Stops watching the VM (engine closed, or the pod is being stopped): the
   * connection closes and no reconnect or "died" event follows. The VM keeps
   * running unless the caller stops it.
   */
  detach(closeSinks: boolean): void {
    this.detached = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.client?.close();
    this.client = null;
    if (closeSinks) {
      for (const sink of this.sinks.values()) sink.close();
      this.sinks.clear();
    }
  }

  private sendStdin(containerId: string, execId: number, chunk: Buffer, close: boolean): void {
    if (chunk.length === 0) {
      this.client?.notify('Stdin', { containerId, execId, data: chunk, close });
      return;
    }
    for (let i = 0; i < chunk.length; i += CHUNK) {
      const last = i + CHUNK >= chunk.length;
      this.client?.notify('Stdin', { containerId, execId, data: chunk.subarray(i, i + CHUNK), close: close && last });
    }
  }

  private subscribe(client: AgentClient): void {
    client.on('Output', (o) => {
      const stream = o.stream === Stream.STDERR ? 'stderr' : 'stdout';
      const sink = this.sinks.get(o.containerId);
      sink?.write(stream, o.offset, o.data, o.time);
      const at = this.flushAt.get(o.containerId);
      if (sink !== undefined && at !== undefined && sink.writtenOffset >= at) {
        this.flushAt.delete(o.containerId);
        sink.flushPartial(o.time);
      }
      for (const l of this.outputListeners.get(o.containerId) ?? []) l(o.stream, o.data);
    });
    client.on('ContainerExited', (e) => {
      this.lastKnown.set(e.container.id, e.container);
      this.onExited(e.container);
    });
    client.on('ExecOutput', (e) => this.execs.get(e.execId)?.onOutput(e.stream, e.data));
    client.on('ExecExited', (e) => this.execs.get(e.execId)?.onExit(e.exitCode));
    client.on('PortData', (p) => this.ports.get(p.connId)?.onData(p.data));
    client.on('PortClose', (p) => this.ports.get(p.connId)?.onClose(p.error));
    client.on('AgentLog', (l) => {
      const fields = { agent: true };
      if (l.level >= LogLevel.ERROR) this.log.error(fields, l.message);
      else if (l.level >= LogLevel.WARN) this.log.warn(fields, l.message);
      else this.log.debug(fields, l.message);
    });
    client.onClose((reason) => this.onLost(client, reason));
  }

  /** `vmGone`: no more output can come, so the log is flushed whatever arrived. */
  private onExited(info: ContainerInfo, vmGone = false): void {
    // An unterminated last line is written as a partial record once all output is in (a replay may follow a Hello).
    const sink = this.sinks.get(info.id);
    if (sink !== undefined && (vmGone || sink.writtenOffset >= info.outputEnd)) sink.flushPartial(info.finishedAt);
    else if (sink !== undefined) this.flushAt.set(info.id, info.outputEnd);
    for (const w of [...(this.exitWaiters.get(info.id) ?? [])]) w(info);
    const st = this.statusOf(info);
    this.deps.emit({
      type: 'container-exited',
      containerId: info.id,
      exitCode: st.exitCode,
      finishedAt: st.finishedAt,
      reason: st.reason,
    });
  }

  private onLost(client: AgentClient, reason: HcrError): void {
    // Only the current, greeted connection matters; a failed greeting is its caller's business.
    if (this.client !== client) return;
    this.client = null;
    const lost = [...this.execs.values(), ...this.ports.values()];
    this.execs.clear();
    this.ports.clear();
    if (this.detached || this.stopping) {
      for (const w of lost) w.onLost(reason);
      return;
    }
    this.lostSettled = this.judgeLoss(reason)
      .catch((e: unknown) => this.log.error({ err: String(e) }, 'judging a lost agent connection failed'))
      .then(() => {
        const e = this.death === null ? reason : errors.failedPrecondition(this.death.message);
        for (const w of lost) w.onLost(e);
      });
  }

  /**
   * Decides what a lost connection means. QEMU closes the agent socket as it
   * exits, so the process may still be there for a moment: it gets a few
   * seconds to go. A guest that panicked is dead even if QEMU lingers.
   */
  private async judgeLoss(reason: HcrError): Promise<void> {
    const deadline = Date.now() + EXIT_GRACE_MS;
    while (this.deps.driver.isAlive(this.handle) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    if (this.detached || this.stopping) return;
    const cause = vmDeath(this.record.id, this.handle.consoleLog);
    if (!this.deps.driver.isAlive(this.handle) || cause.reason !== 'Error') {
      this.vmDied(cause);
      return;
    }
    this.log.warn({ err: reason.message }, 'agent connection lost while the VM runs; reconnecting');
    this.scheduleReconnect(1);
  }

  /** The VM is gone on its own: everything in it died with it. */
  private vmDied(cause: VmDeath = vmDeath(this.record.id, this.handle.consoleLog)): void {
    if (this.death !== null) return;
    this.death = cause;
    for (const id of this.flushAt.keys()) this.sinks.get(id)?.flushPartial();
    this.flushAt.clear();
    // Every container of the pod has a log sink; the agent may not have been asked about one yet.
    for (const id of new Set([...this.lastKnown.keys(), ...this.sinks.keys()])) {
      const info = this.lastKnown.get(id) ?? unseenContainer(id);
      if (info.status !== ContainerStatus.EXITED) {
        const dead = {
          ...info,
          status: ContainerStatus.EXITED,
          exitCode: 255,
          finishedAt: BigInt(Date.now()) * 1_000_000n,
        };
        this.lastKnown.set(id, dead);
        this.lostWithVm.add(id);
        this.onExited(dead, true);
      }
    }
    const message = `${cause.message}; last console lines:\n${consoleTail(this.handle.consoleLog)}`;
    this.log.error({ reason: cause.reason }, message);
    this.deps.emit({ type: 'sandbox-died', sandboxId: this.record.id, message });
  }

  private scheduleReconnect(attempt: number): void {
    if (this.detached || this.reconnectTimer !== null) return;
    this.reconnectTimer = setTimeout(
      () => {
        this.reconnectTimer = null;
        if (this.detached || this.connected) return;
        void this.connect(10_000).match(
          () => this.log.info({ attempt }, 'agent connection re-established'),
          (e) => {
            this.log.warn({ attempt, err: e.message }, 'agent reconnect failed');
            if (this.alive) this.scheduleReconnect(attempt + 1);
            else if (!this.detached) this.vmDied();
          },
        );
      },
      Math.min(30_000, 500 * 2 ** Math.min(attempt, 6)),
    );
  }
}
