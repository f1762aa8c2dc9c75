import { copyFileSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  errAsync,
  errors,
  okAsync,
  ResultAsync,
  toHcrError,
  type ContainerCreated,
  type ContainerRef,
  type ContainerStats,
  type EngineCapabilities,
  type EngineContainerStatus,
  type EngineContext,
  type EngineEvent,
  type EngineHealth,
  type EngineInventory,
  type EngineResult,
  type EngineSandboxStatus,
  type ExecSyncResult,
  type HcrError,
  type LinuxResources,
  type Logger,
  type PodInterface,
  type RuntimeEngine,
  type SandboxCreated,
  type SandboxRef,
  type SandboxStats,
  type StreamIO,
} from '@hcr/core';
import { resolveConfig, type HyperConfig, type HyperConfigTable } from './config.js';
import { agentFaultCmdline } from './fault.js';
import { bindMount, mountsUnder, unmountAll } from './host/mounts.js';
import { connectTap, disconnectTap, TAP_NAME } from './host/netns.js';
import { LogSink } from './logs.js';
import { consoleTail, PodVm, vmDeath } from './pod.js';
import {
  ContainerStatus,
  type CreateContainer,
  type HelloReply,
  type Mount,
  type Process,
  type Route,
} from './protocol/wire.gen.js';
import { vmSize } from './sizing.js';
import { TemplateStore, type VmTemplate } from './template.js';
import { EngineState, type ContainerRecord, type SandboxRecord } from './state.js';
import { requireSeccompSupport, seccompFor } from './seccomp.js';
import { containerProcess, execProcess, wireResources } from './translate.js';
import { chooseAccel, type AccelVerdict } from './vm/kvm.js';
import { QemuDriver } from './vm/qemu.js';
import type { VmDriver, VmHandle, VmSpec } from './vm/driver.js';

/** The mount tag of the pod share. */
const SHARE_TAG = 'hcrshare';
/** sun_path holds 108 bytes with the NUL; QEMU's sockets live in the VM dir. */
const MAX_SOCKET_PATH = 107;
/** ExecSync keeps at most this much of each stream. */
const EXEC_SYNC_MAX_OUTPUT = 16 * 1024 * 1024;
const SIGTERM = 15;
const SIGKILL = 9;

/** What a hyper pod can and cannot do; the router and CRI layer refuse the rest by name. */
export const HYPER_CAPABILITIES: EngineCapabilities = {
  hostNetwork: false,
  hostPid: false,
  hostIpc: false,
  privileged: false,
  exec: true,
  execSync: true,
  attach: true,
  attachStdin: true,
  portForward: true,
  tty: true,
  hostPathMounts: true,
  updateResources: true,
  stats: true,
  reopenLog: true,
  imageKinds: ['oci'],
  // The VM boots while CNI ADD runs; networkReady wires it to the result.
  sandboxBeforeNetwork: true,
};

const run = <T>(fn: () => Promise<T>): EngineResult<T> =>
  ResultAsync.fromPromise((async () => fn())(), (e) => toHcrError(e));

async function unwrap<T>(r: ResultAsync<T, HcrError>): Promise<T> {
  const v = await r;
  if (v.isErr()) throw v.error;
  return v.value;
}

/** The routes of the pod: the CNI result's, with CNI's default gateway where a route names none. */
export function podRoutes(cniResult: unknown, gateway: string | null): Route[] {
  const routes: Route[] = [];
  const raw = (cniResult as { routes?: unknown } | null)?.routes;
  if (Array.isArray(raw)) {
    for (const r of raw as { dst?: unknown; gw?: unknown }[]) {
      if (typeof r.dst !== 'string') continue;
      const gw = typeof r.gw === 'string' ? r.gw : (gateway ?? '');
      const v6 = r.dst.includes(':');
      // A gateway of the other family cannot route this destination.
      routes.push({ destination: r.dst, gateway: gw !== '' && gw.includes(':') === v6 ? gw : '' });
    }
  }
  if (routes.length === 0 && gateway !== null) {
    routes.push({ destination: gateway.includes(':') ? '::/0' : '0.0.0.0/0', gateway });
  }
  return routes;
}

/** The CNI interface the guest NIC stands in for; undefined while CNI ADD has not finished. */
function podInterface(sandbox: SandboxRef): PodInterface | undefined {
  return sandbox.network.interfaces.find((i) => i.name === 'eth0') ?? sandbox.network.interfaces[0];
}

/** A random locally administered unicast MAC: the guest NIC's until the agent gives it the pod interface's. */
function localMac(): string {
  const b = randomBytes(6);
  b[0] = ((b[0] ?? 0) & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * The hyper engine: every pod in its own QEMU microVM, containers created
 * inside it by the guest agent, root filesystems shared over virtio-9p, the
 * pod's CNI interface joined to the VM through a TAP device.
 */
export class HyperEngine implements RuntimeEngine {
  readonly kind = 'hyper';
  readonly capabilities = HYPER_CAPABILITIES;
  private readonly pods = new Map<string, PodVm>();
  private readonly listeners = new Set<(event: EngineEvent) => void>();
  private readonly state: EngineState;
  private readonly log: Logger;
  private accel: Promise<AccelVerdict>;
  private accelSettled: AccelVerdict | null = null;
  /** VM templates, when `template = true`. */
  private readonly templates: TemplateStore | null;

  private constructor(
    readonly name: string,
    private readonly config: HyperConfig,
    private readonly ctx: EngineContext,
    private readonly driver: VmDriver,
    /** Kernel command-line words of every VM this engine starts (only the test-only fault hook so far). */
    private readonly cmdline: readonly string[],
  ) {
    this.state = new EngineState(ctx.runtimeDir);
    this.log = ctx.logger;
    this.accel = this.probeAccel();
    this.templates = config.template
      ? new TemplateStore(join(ctx.stateDir, 'templates'), join(ctx.runtimeDir, 'tpl'), {
          driver,
          logger: ctx.logger,
          kernel: config.kernel,
          initrd: config.initrd,
          shareTag: SHARE_TAG,
          tapName: TAP_NAME,
          cmdline,
          bootTimeoutMs: config.bootTimeoutMs,
          vmmVersion: async () =>
            driver instanceof QemuDriver ? ((await unwrap(driver.version())) ?? 'unknown') : driver.kind,
        })
      : null;
  }

  /** Creates the engine and reattaches to the VMs an earlier HCR left running. */
  static create(table: HyperConfigTable, ctx: EngineContext, driver?: VmDriver): EngineResult<HyperEngine> {
    const config = resolveConfig(table, cpus().length);
    if (config.isErr()) return errAsync(config.error);
    const fault = agentFaultCmdline(process.env['HCR_AGENT_FAULT']);
    if (fault.isErr()) return errAsync(fault.error);
    if (fault.value.length > 0) ctx.logger.warn({ cmdline: fault.value }, 'HCR_AGENT_FAULT: pod agents will crash');
    const engine = new HyperEngine(
      ctx.name,
      config.value,
      ctx,
      driver ?? new QemuDriver(config.value.qemuBinary),
      fault.value,
    );
    return run(async () => {
      mkdirSync(ctx.runtimeDir, { recursive: true, mode: 0o700 });
      await engine.recover();
      await engine.prewarmTemplate();
      return engine;
    });
  }

  /**
   * Clears what an interrupted template build left and starts building the
   * template of the default pod size in the background, so the first pod
   * does not wait for it.
   */
  private async prewarmTemplate(): Promise<void> {
    const store = this.templates;
    if (store === null) return;
    await store
      .prune()
      .catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'cleaning up VM templates failed'));
    void this.accel.then((v) =>
      store.get({ vcpus: this.config.defaultVcpus, memoryMiB: this.config.defaultMemoryMiB, accel: v.accel }),
    );
  }

  private probeAccel(): Promise<AccelVerdict> {
    const p = chooseAccel(this.config.kvm, {
      qemuBinary: this.config.qemuBinary,
      kernel: this.config.kernel,
      initrd: this.config.initrd,
      timeoutMs: this.config.kvmProbeTimeoutMs,
    }).then((v) => {
      this.accelSettled = v;
      this.log.info({ accel: v.accel, reason: v.reason }, 'hyper accelerator chosen');
      return v;
    });
    return p;
  }

  private emit(event: EngineEvent): void {
    for (const l of [...this.listeners]) l(event);
  }

  private podDeps() {
    return {
      driver: this.driver,
      logger: this.log,
      emit: (e: EngineEvent) => this.emit(e),
      requestTimeoutMs: this.config.requestTimeoutMs,
    };
  }

  /**
   * Finds the VMs of earlier HCR runs and reconnects to their agents (all at
   * once: one unresponsive VM must not hold up the others); output they
   * buffered meanwhile is replayed into the CRI logs.
   */
  private async recover(): Promise<void> {
    await Promise.all(this.state.listSandboxes().map((rec) => this.reattach(rec)));
  }

  private async reattach(rec: SandboxRecord): Promise<void> {
    const handle = await unwrap(this.driver.reconnect(rec.vmDir));
    if (handle === null) {
      this.log.warn({ podSandboxId: rec.id }, 'the VM of a known pod is gone; it stays until the pod is removed');
      return;
    }
    const pod = new PodVm(rec, handle, this.podDeps());
    for (const c of this.state.listContainers(rec.id)) {
      pod.sinks.set(c.id, new LogSink(c.id, c.logPath, this.state, this.log));
    }
    this.pods.set(rec.id, pod);
    const hello = await pod.connect(Math.min(this.config.bootTimeoutMs, 15_000));
    if (hello.isErr()) {
      this.log.warn(
        { podSandboxId: rec.id, err: hello.error.message },
        'cannot reach the agent of a running VM yet; retrying in the background',
      );
      pod.reconnectLater();
      return;
    }
    this.log.info(
      { podSandboxId: rec.id, vmPid: handle.pid, containers: hello.value.containers.length },
      'reattached to a running pod VM',
    );
  }

  health(): EngineResult<EngineHealth> {
    return run(async () => {
      const info: Record<string, string> = {
        kernel: this.config.kernel,
        initrd: this.config.initrd,
        accel: this.accelSettled?.accel ?? 'probing',
        accelReason: this.accelSettled?.reason ?? 'the KVM probe is running',
        pods: String(this.pods.size),
        template: this.templates === null ? 'off' : `on (${this.templates.count()} built)`,
      };
      const fail = (reason: string, message: string): EngineHealth => ({ ready: false, reason, message, info });
      for (const [what, path] of [
        ['kernel', this.config.kernel],
        ['initrd', this.config.initrd],
      ] as const) {
        if (!existsSync(path)) {
          return fail(
            'GuestAssetsMissing',
            `guest ${what} ${path} is missing; build it with packages/engine-hyper/scripts/setup-assets.sh`,
          );
        }
      }
      if (!existsSync('/dev/net/tun')) return fail('TunMissing', '/dev/net/tun is missing; pods cannot get a TAP');
      const version = this.driver instanceof QemuDriver ? await unwrap(this.driver.version()) : this.driver.kind;
      if (version === null) {
        return fail('QemuMissing', `${this.config.qemuBinary} does not run; install qemu-system-x86`);
      }
      info['vmm'] = version;
      return { ready: true, reason: '', message: '', info };
    });
  }

  inventory(): EngineResult<EngineInventory> {
    return run(async () => ({
      sandboxIds: this.state.listSandboxes().map((s) => s.id),
      containerIds: this.state.listContainers().map((c) => c.id),
    }));
  }

  // ------------------------------------------------------------ sandboxes

  /** The VM dir: the sandbox's runtime dir when QEMU's socket paths fit there, else a short one of the engine's. */
  private vmDirFor(sandbox: SandboxRef): string {
    const candidates = [join(sandbox.runtimeDir, 'vm'), join(this.ctx.runtimeDir, 'vm', sandbox.id.slice(0, 24))];
    const fits = candidates.find((d) => join(d, 'agent.sock').length <= MAX_SOCKET_PATH);
    if (fits === undefined) {
      throw errors.failedPrecondition(
        `no VM dir with socket paths under ${MAX_SOCKET_PATH} bytes (tried ${candidates.join(', ')}); configure a shorter runtime dir`,
      );
    }
    return fits;
  }

  /**
   * Starts the pod VM. Core calls this while CNI ADD still runs
   * (`sandboxBeforeNetwork`): `sandbox.network` then holds only the namespace,
   * so QEMU makes the TAP itself and the guest NIC gets a MAC of its own;
   * {@link networkReady} joins the TAP to the CNI interface and has the agent
   * take over the interface's MAC and addresses. Given a complete network (a
   * caller that ran CNI first) it does both here.
   */
  createSandbox(sandbox: SandboxRef): EngineResult<SandboxCreated> {
    return run(async () => {
      const ns = sandbox.spec.linux.namespaces;
      const netnsPath = sandbox.network.netnsPath;
      if (netnsPath === null || ns.network === 'node') {
        throw errors.unsupported(
          this.name,
          'hostNetwork',
          'a hyper pod has its own kernel and cannot use the host network',
        );
      }
      if (ns.pid === 'node')
        throw errors.unsupported(this.name, 'hostPid', 'a hyper pod cannot share the host PID namespace');
      if (ns.ipc === 'node')
        throw errors.unsupported(this.name, 'hostIpc', 'a hyper pod cannot share the host IPC namespace');
      if (sandbox.spec.linux.privileged) {
        throw errors.unsupported(this.name, 'privileged', 'a hyper pod cannot be privileged on the host');
      }
      if (this.pods.has(sandbox.id) || this.state.getSandbox(sandbox.id) !== null) {
        throw errors.alreadyExists(`pod ${sandbox.id} already has a VM in engine ${this.name}`);
      }
      const vmDir = this.vmDirFor(sandbox);
      const shareDir = join(sandbox.runtimeDir, 'share');
      const size = vmSize(sandbox.spec, this.config);
      const verdict = await this.accel;
      let record: SandboxRecord = {
        id: sandbox.id,
        runtimeDir: sandbox.runtimeDir,
        vmDir,
        shareDir,
        netnsPath,
        // CNI names the interface it makes after CNI_IFNAME (core's is eth0); networkReady records the real one.
        ifname: podInterface(sandbox)?.name ?? 'eth0',
        accel: verdict.accel,
        vcpus: size.vcpus,
        memoryMiB: size.memoryMiB,
        nicMac: localMac(),
      };
      // Written first: whatever a crash leaves half-made below, removeSandbox finds it from here.
      this.state.putSandbox(record);
      const log = this.log.child({ podSandboxId: sandbox.id });
      try {
        mkdirSync(join(shareDir, 'pod'), { recursive: true, mode: 0o755 });
        mkdirSync(join(shareDir, 'c'), { recursive: true, mode: 0o755 });
        const shape = { vcpus: size.vcpus, memoryMiB: size.memoryMiB, accel: verdict.accel };
        const template = this.templates === null ? null : await this.templates.get(shape);
        const started = performance.now();
        const spec: VmSpec = {
          name: `hcr-${sandbox.id.slice(0, 12)}`,
          dir: vmDir,
          kernel: this.config.kernel,
          initrd: this.config.initrd,
          cmdline: this.cmdline,
          vcpus: size.vcpus,
          memoryMiB: size.memoryMiB,
          accel: verdict.accel,
          netnsPath,
          // No TAP exists yet: QEMU makes it in the pod namespace, and it goes when QEMU does.
          nics: [{ tap: TAP_NAME, mac: record.nicMac ?? '' }],
          shares: [{ tag: SHARE_TAG, path: shareDir }],
        };
        const cloned = template === null ? null : await this.startFromTemplate(record, spec, template);
        if (cloned !== null && template !== null) {
          record = { ...record, template: template.key, nicMac: template.mac };
          this.state.putSandbox(record);
        }
        const { pod, hello } = cloned ?? (await this.bootVm(record, spec));
        const handle = pod.handle;
        const bootMs = Math.round(performance.now() - started);
        this.pods.set(sandbox.id, pod);
        log.info(
          {
            vmPid: handle.pid,
            accel: verdict.accel,
            vcpus: size.vcpus,
            memoryMiB: size.memoryMiB,
            bootMs,
            template: cloned !== null ? template?.key : undefined,
          },
          'pod VM up',
        );
        if (podInterface(sandbox) !== undefined) await this.wire(sandbox, record, pod);
        return {
          engineData: {
            vmPid: handle.pid,
            accel: verdict.accel,
            vcpus: size.vcpus,
            memoryMiB: size.memoryMiB,
            kernelRelease: hello.kernelRelease,
            agentVersion: hello.agentVersion,
            bootMs,
            template: cloned !== null ? (template?.key ?? '') : '',
          },
        };
      } catch (e) {
        await unwrap(this.teardownSandbox(sandbox.id)).catch((te: unknown) =>
          log.error({ err: String(te) }, 'cleaning up a failed pod VM left something behind'),
        );
        throw e;
      }
    });
  }

  /**
   * Wires the booted VM to the pod's CNI interface and sets the pod up in the
   * guest (see {@link createSandbox}); does nothing when that is done already.
   * On failure the VM is left to core's rollback (removeSandbox).
   */
  networkReady(sandbox: SandboxRef): EngineResult<void> {
    return run(async () => {
      const record = this.state.getSandbox(sandbox.id);
      if (record === null) throw errors.failedPrecondition(`pod ${sandbox.id} has no VM in engine ${this.name}`);
      if (record.wired === true) return;
      await this.wire(sandbox, record, this.requirePod(sandbox.id));
    });
  }

  /** Joins the TAP to the CNI interface, copies the pod files and has the agent set the pod up. */
  private async wire(sandbox: SandboxRef, booted: SandboxRecord, pod: PodVm): Promise<void> {
    const iface = podInterface(sandbox);
    if (iface === undefined || booted.netnsPath === null) {
      throw errors.failedPrecondition(`the network of pod ${sandbox.id} has no interface to give the VM`);
    }
    const started = performance.now();
    // Recorded before the redirect exists, so a teardown after a crash removes the right one.
    let record: SandboxRecord = { ...booted, ifname: iface.name };
    if (record.ifname !== booted.ifname) this.state.putSandbox(record);
    const link = await unwrap(connectTap(booted.netnsPath, iface.name));
    const hostname = sandbox.spec.hostname !== '' ? sandbox.spec.hostname : sandbox.spec.metadata.name.slice(0, 63);
    // Core writes the pod files once CNI ADD is done, so they are copied only now.
    for (const [name, src] of [
      ['hosts', sandbox.files.hosts],
      ['resolv.conf', sandbox.files.resolvConf],
      ['hostname', sandbox.files.hostname],
    ] as const) {
      const dst = join(booted.shareDir, 'pod', name);
      if (existsSync(src)) copyFileSync(src, dst);
      else writeFileSync(dst, name === 'hostname' ? `${hostname}\n` : '', { mode: 0o644 });
    }
    await unwrap(
      pod.request('SetupPod', {
        hostname,
        shareTag: SHARE_TAG,
        interfaces: [{ mac: link.mac, addresses: iface.addresses, mtu: link.mtu, guestMac: booted.nicMac ?? '' }],
        routes: podRoutes(sandbox.network.cniResult, sandbox.network.gateway),
        sysctls: Object.entries(sandbox.spec.linux.sysctls).map(([key, value]) => ({ key, value })),
      }),
    );
    record = { ...record, wired: true };
    this.state.putSandbox(record);
    this.log.info(
      { podSandboxId: sandbox.id, ips: iface.addresses, wireMs: Math.round(performance.now() - started) },
      'pod VM network up',
    );
  }

  /** Boots a pod VM's kernel; the watchdog kills a VM whose agent does not greet within the boot timeout. */
  private async bootVm(record: SandboxRecord, spec: VmSpec): Promise<{ pod: PodVm; hello: HelloReply }> {
    const handle = await unwrap(this.driver.start(spec));
    const pod = new PodVm(record, handle, this.podDeps());
    const hello = await pod.connect(this.config.bootTimeoutMs);
    if (hello.isErr()) {
      pod.detach(true);
      await this.driver.kill(handle);
      throw errors.unavailable(
        `the VM of pod ${record.id} did not come up within ${this.config.bootTimeoutMs / 1000} s ` +
          `(${spec.accel}, ${hello.error.message}); last console lines:\n${consoleTail(handle.consoleLog)}`,
      );
    }
    return { pod, hello: hello.value };
  }

  /**
   * Starts a pod VM from a template: the same machine and devices with the
   * pod's backends (its TAP, share and sockets), the template's RAM mapped
   * copy-on-write, its device state loaded, then resumed; the agent's Hello
   * reseeds the guest RNG. Null (after a warning, with the template dropped
   * and the VM gone) when anything fails: the caller boots normally.
   */
  private async startFromTemplate(
    record: SandboxRecord,
    spec: VmSpec,
    template: VmTemplate,
  ): Promise<{ pod: PodVm; hello: HelloReply } | null> {
    const clone: VmSpec = {
      ...spec,
      nics: spec.nics.map((n) => ({ ...n, mac: template.mac })),
      memoryFile: { path: template.memoryPath, shared: false },
      incoming: true,
    };
    let handle: VmHandle | null = null;
    let pod: PodVm | null = null;
    try {
      handle = await unwrap(this.driver.start(clone));
      await unwrap(this.driver.restoreState(handle, template.statePath, this.config.bootTimeoutMs));
      pod = new PodVm(record, handle, this.podDeps());
      const hello = await unwrap(pod.connect(this.config.bootTimeoutMs));
      return { pod, hello };
    } catch (e) {
      pod?.detach(true);
      if (handle !== null) await unwrap(this.driver.kill(handle)).catch(() => undefined);
      const tail = handle === null ? '' : `; last console lines:\n${consoleTail(handle.consoleLog, 10)}`;
      this.templates?.invalidate(template, `${(e as Error).message}${tail}`);
      return null;
    }
  }

  stopSandbox(sandbox: SandboxRef, gracePeriodSeconds: number): EngineResult<void> {
    return run(async () => {
      const record = this.state.getSandbox(sandbox.id);
      if (record === null) return;
      const pod = this.pods.get(sandbox.id);
      pod?.beginStop();
      let shutdownSent = false;
      if (pod !== undefined && pod.connected) {
        // An agent that does not answer (hung, or its VM paused) cannot stop anything: the VM is killed below.
        const listed = await pod.listContainers();
        if (listed.isErr()) {
          this.log.warn(
            { podSandboxId: sandbox.id, err: listed.error.message },
            'the agent does not answer; stopping the pod VM without it',
          );
        } else {
          const running = listed.value.filter((c) => c.status === ContainerStatus.RUNNING);
          await Promise.all(running.map((c) => this.stopInPod(pod, c.id, gracePeriodSeconds).catch(() => undefined)));
          // The last word on every container before the VM goes: statuses after this come from it.
          await pod.listContainers().orElse(() => okAsync([]));
          shutdownSent = (await pod.request('Shutdown', {}, 10_000)).isOk();
        }
      }
      await this.powerOff(record, shutdownSent);
      pod?.detach(true);
      this.pods.delete(sandbox.id);
      if (record.netnsPath !== null) await unwrap(disconnectTap(record.netnsPath, record.ifname));
    });
  }

  /** After a Shutdown the agent powers the VM off; otherwise (or if it does not) QMP quit, then SIGKILL. */
  private async powerOff(record: SandboxRecord, shutdownSent: boolean): Promise<void> {
    const handle = await unwrap(this.driver.reconnect(record.vmDir));
    if (handle === null) return;
    const deadline = Date.now() + (shutdownSent ? 10_000 : 0);
    while (this.driver.isAlive(handle) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (!this.driver.isAlive(handle)) return;
    const quit = await this.driver.stop(handle, 5_000);
    if (quit.isErr()) {
      this.log.warn({ podSandboxId: record.id, err: quit.error.message }, 'QEMU did not quit; killing it');
      await unwrap(this.driver.kill(handle));
    }
  }

  removeSandbox(sandbox: SandboxRef): EngineResult<void> {
    return this.teardownSandbox(sandbox.id, sandbox.runtimeDir);
  }

  /** Kills the VM if it still runs and removes every trace of the pod; each step is idempotent. */
  private teardownSandbox(id: string, runtimeDir?: string): EngineResult<void> {
    return run(async () => {
      const record = this.state.getSandbox(id);
      const pod = this.pods.get(id);
      pod?.detach(true);
      this.pods.delete(id);
      if (record !== null) {
        const handle = await unwrap(this.driver.reconnect(record.vmDir));
        if (handle !== null) await unwrap(this.driver.kill(handle));
        for (const c of this.state.listContainers(id)) await this.releaseContainer(c.id, record);
        await unwrap(unmountAll(record.shareDir));
        rmSync(record.shareDir, { recursive: true, force: true });
        for (const f of this.driver.files(record.vmDir)) rmSync(f, { force: true });
        rmSync(record.vmDir, { recursive: true, force: true });
        if (record.netnsPath !== null) await unwrap(disconnectTap(record.netnsPath, record.ifname));
        this.state.deleteSandbox(id);
      } else if (runtimeDir !== undefined && runtimeDir !== '') {
        // An orphan without a record: at least leave no mount under its dir.
        await unwrap(unmountAll(join(runtimeDir, 'share')));
      }
    });
  }

  sandboxStatus(sandbox: SandboxRef): EngineResult<EngineSandboxStatus> {
    return run(async () => {
      const record = this.state.getSandbox(sandbox.id);
      const pod = this.pods.get(sandbox.id);
      const stalledSince = pod?.stalledSince ?? null;
      // An agent that lets requests time out cannot run or stop anything in the pod: not ready until it answers.
      const alive = pod !== undefined && pod.alive && stalledSince === null;
      // Nothing else may ask a stalled agent anything (a pod without containers): ask it, so a later status sees it back.
      if (stalledSince !== null) void pod?.listContainers();
      return {
        alive,
        info:
          record === null
            ? {}
            : {
                vmPid: pod?.handle.pid ?? 0,
                accel: record.accel,
                vcpus: record.vcpus,
                memoryMiB: record.memoryMiB,
                agentConnected: pod?.connected ?? false,
                agentStalledSince: stalledSince === null ? '' : new Date(stalledSince).toISOString(),
                died: pod?.died?.message ?? '',
                template: record.template ?? '',
                console: join(record.vmDir, 'console.log'),
              },
      };
    });
  }

  // ----------------------------------------------------------- containers

  private requirePod(sandboxId: string): PodVm {
    const pod = this.pods.get(sandboxId);
    if (pod?.died != null) throw errors.failedPrecondition(pod.died.message);
    if (pod === undefined || !pod.alive) {
      throw errors.failedPrecondition(`pod ${sandboxId} has no running VM in engine ${this.name}`);
    }
    return pod;
  }

  createContainer(container: ContainerRef): EngineResult<ContainerCreated> {
    return run(async () => {
      const spec = container.spec;
      const sec = spec.linux.security;
      if (sec.privileged) {
        throw errors.unsupported(this.name, 'privileged', 'a container in a hyper pod cannot be privileged');
      }
      if (sec.namespaces.pid === 'node') throw errors.unsupported(this.name, 'hostPid');
      if (sec.namespaces.ipc === 'node') throw errors.unsupported(this.name, 'hostIpc');
      if (sec.namespaces.network === 'node') throw errors.unsupported(this.name, 'hostNetwork');
      if (sec.namespaces.pid === 'target') {
        throw errors.unsupported(
          this.name,
          'targetPidNamespace',
          'a hyper pod cannot join another container’s PID namespace',
        );
      }
      if (spec.devices.length > 0) {
        throw errors.unsupported(this.name, 'devices', 'host devices cannot be passed into a hyper pod VM');
      }
      const bidi = spec.mounts.find((m) => m.propagation === 'bidirectional');
      if (bidi !== undefined) {
        throw errors.unsupported(
          this.name,
          'bidirectionalMountPropagation',
          `mount ${bidi.containerPath}: mounts made in a hyper pod cannot propagate back to the host`,
        );
      }
      const pod = this.requirePod(container.sandbox.id);
      const record = pod.record;
      const hostname =
        container.sandbox.spec.hostname !== ''
          ? container.sandbox.spec.hostname
          : container.sandbox.spec.metadata.name.slice(0, 63);
      const base = containerProcess(spec, container.image, hostname);
      if (base.isErr()) throw base.error;
      const seccomp = await unwrap(
        seccompFor(sec.seccomp, {
          engine: this.name,
          capabilities: base.value.capabilities,
          kernelRelease: pod.kernelRelease,
        }),
      );
      const supported = requireSeccompSupport(seccomp, pod.agentFeatures, record.id);
      if (supported.isErr()) throw supported.error;
      const proc: Process = { ...base.value, seccomp };
      const cdir = join(record.shareDir, 'c', container.id);
      const crec: ContainerRecord = {
        id: container.id,
        sandboxId: record.id,
        logPath: container.logPath,
        stdin: spec.stdin,
        stdinOnce: spec.stdinOnce,
        tty: spec.tty,
        process: proc,
      };
      this.state.putContainer(crec);
      try {
        const rootfs = await unwrap(this.ctx.images.prepareRootfs(container.image.id, container.id));
        mkdirSync(join(cdir, 'rootfs'), { recursive: true, mode: 0o755 });
        await unwrap(bindMount(rootfs.path, join(cdir, 'rootfs'), false));
        const mounts: Mount[] = [];
        for (const [i, m] of spec.mounts.entries()) {
          if (!existsSync(m.hostPath)) mkdirSync(m.hostPath, { recursive: true });
          const target = join(cdir, 'm', String(i));
          mkdirSync(join(cdir, 'm'), { recursive: true, mode: 0o755 });
          if (statSync(m.hostPath).isDirectory()) mkdirSync(target, { recursive: true });
          else writeFileSync(target, '', { flag: 'a' });
          await unwrap(bindMount(m.hostPath, target, m.readonly));
          mounts.push({ source: `c/${container.id}/m/${i}`, destination: m.containerPath, readonly: m.readonly });
        }
        // The pod's files, unless the kubelet mounts its own over the same paths.
        for (const [file, path] of [
          ['hosts', '/etc/hosts'],
          ['resolv.conf', '/etc/resolv.conf'],
          ['hostname', '/etc/hostname'],
        ] as const) {
          if (!spec.mounts.some((m) => m.containerPath === path)) {
            mounts.unshift({ source: `pod/${file}`, destination: path, readonly: false });
          }
        }
        const req: CreateContainer = {
          id: container.id,
          rootfs: `c/${container.id}/rootfs`,
          hostname,
          mounts,
          process: proc,
          readonlyRootfs: sec.readonlyRootfs,
          resources: wireResources(spec.linux.resources),
          maskedPaths: sec.maskedPaths,
          readonlyPaths: sec.readonlyPaths,
          sharePidNamespace: sec.namespaces.pid === 'pod',
          shareIpcNamespace: sec.namespaces.ipc !== 'container',
        };
        pod.sinks.set(container.id, new LogSink(container.id, container.logPath, this.state, this.log));
        const created = await unwrap(pod.request('CreateContainer', req));
        return { engineData: { pid: created.pid } };
      } catch (e) {
        await this.releaseContainer(container.id, record).catch((ce: unknown) =>
          this.log.error({ containerId: container.id, err: String(ce) }, 'cleanup of a failed container failed'),
        );
        throw e;
      }
    });
  }

  /** Host-side leftovers of a container: its log writer, share mounts, root filesystem and records. */
  private async releaseContainer(id: string, sandbox: SandboxRecord | null): Promise<void> {
    const pod = sandbox === null ? undefined : this.pods.get(sandbox.id);
    pod?.forget(id);
    if (sandbox !== null) {
      const cdir = join(sandbox.shareDir, 'c', id);
      await unwrap(unmountAll(cdir));
      if (mountsUnder(cdir).length === 0) rmSync(cdir, { recursive: true, force: true });
    }
    await unwrap(this.ctx.images.releaseRootfs(id));
    this.state.deleteContainer(id);
  }

  startContainer(container: ContainerRef): EngineResult<void> {
    return run(async () => {
      const pod = this.requirePod(container.sandbox.id);
      await unwrap(pod.request('StartContainer', { id: container.id }));
    });
  }

  /**
   * SIGTERM, up to `timeoutSeconds` for the exit, then SIGKILL. The agent may
   * hold the SIGTERM for the grace period until a process that just started
   * installs its handler (see SignalContainer in protocol/agent.json).
   */
  private async stopInPod(pod: PodVm, id: string, timeoutSeconds: number): Promise<void> {
    if (timeoutSeconds > 0) {
      const holdMs = Math.min(timeoutSeconds * 1000, 0xffff_ffff);
      await unwrap(pod.request('SignalContainer', { id, signal: SIGTERM, holdMs }));
      if ((await pod.waitExit(id, timeoutSeconds * 1000)) !== null) return;
    }
    await unwrap(pod.request('SignalContainer', { id, signal: SIGKILL, holdMs: 0 }));
    if ((await pod.waitExit(id, 15_000)) === null) {
      throw errors.deadlineExceeded(`container ${id} did not exit within 15 s of SIGKILL`);
    }
  }

  stopContainer(container: ContainerRef, timeoutSeconds: number): EngineResult<void> {
    return run(async () => {
      const pod = this.podOf(container);
      if (pod === undefined || !pod.connected) return;
      const info = (await unwrap(pod.listContainers())).find((c) => c.id === container.id);
      if (info?.status !== ContainerStatus.RUNNING) return;
      await this.stopInPod(pod, container.id, timeoutSeconds);
    });
  }

  private podOf(container: ContainerRef): PodVm | undefined {
    const sandboxId = this.state.getContainer(container.id)?.sandboxId ?? container.sandbox.id;
    return this.pods.get(sandboxId);
  }

  removeContainer(container: ContainerRef): EngineResult<void> {
    return run(async () => {
      const crec = this.state.getContainer(container.id);
      const sandboxId = crec?.sandboxId ?? container.sandbox.id;
      const pod = this.pods.get(sandboxId);
      if (pod !== undefined && pod.connected) await unwrap(pod.request('RemoveContainer', { id: container.id }));
      await this.releaseContainer(container.id, this.state.getSandbox(sandboxId));
    });
  }

  containerStatus(container: ContainerRef): EngineResult<EngineContainerStatus> {
    return run(async () => {
      const pod = this.podOf(container);
      if (pod !== undefined && pod.connected) {
        const info = (await unwrap(pod.listContainers())).find((c) => c.id === container.id);
        if (info !== undefined) return pod.statusOf(info);
      }
      const last = pod?.lastInfo(container.id) ?? null;
      if (pod !== undefined && last !== null && (last.status === ContainerStatus.EXITED || pod.connected)) {
        return pod.statusOf(last);
      }
      if (this.state.getContainer(container.id) === null && last === null) {
        throw errors.notFound(`container ${container.id} is not known to engine ${this.name}`);
      }
      // Known, but its VM is gone (or never answered): it cannot be running. Its console may say why.
      const sandboxId = this.state.getContainer(container.id)?.sandboxId ?? container.sandbox.id;
      const vmDir = this.state.getSandbox(sandboxId)?.vmDir;
      const found = vmDir === undefined ? null : vmDeath(sandboxId, join(vmDir, 'console.log'));
      const death = found?.reason === 'Error' ? null : found;
      return {
        state: 'exited',
        pid: 0,
        startedAt: last?.startedAt ?? 0n,
        finishedAt: last?.finishedAt ?? 0n,
        exitCode: 255,
        reason: death?.reason ?? 'Error',
        message: death?.message ?? `the VM of pod ${sandboxId} is gone`,
      };
    });
  }

  private containerRecord(container: ContainerRef): ContainerRecord {
    const rec = this.state.getContainer(container.id);
    if (rec === null) throw errors.notFound(`container ${container.id} is not known to engine ${this.name}`);
    return rec;
  }

  execSync(container: ContainerRef, cmd: readonly string[], timeoutSeconds: number): EngineResult<ExecSyncResult> {
    return run(async () => {
      const rec = this.containerRecord(container);
      const pod = this.requirePod(rec.sandboxId);
      const proc = execProcess(rec.process, cmd, { tty: false, stdin: false });
      return pod.execSync(container.id, proc, timeoutSeconds * 1000, EXEC_SYNC_MAX_OUTPUT);
    });
  }

  exec(container: ContainerRef, cmd: readonly string[], io: StreamIO): EngineResult<{ readonly exitCode: number }> {
    return run(async () => {
      const rec = this.containerRecord(container);
      const pod = this.requirePod(rec.sandboxId);
      const proc = execProcess(rec.process, cmd, { tty: io.tty, stdin: io.stdin !== null });
      return { exitCode: await pod.exec(container.id, proc, io) };
    });
  }

  attach(container: ContainerRef, io: StreamIO): EngineResult<void> {
    return run(async () => {
      const rec = this.containerRecord(container);
      const pod = this.requirePod(rec.sandboxId);
      if (io.stdin !== null && !rec.stdin) {
        throw errors.failedPrecondition(`container ${container.id} was created without stdin; attach without it`);
      }
      await pod.attach(container.id, io, { stdin: rec.stdin, stdinOnce: rec.stdinOnce });
    });
  }

  portForward(sandbox: SandboxRef, port: number, stream: Duplex): EngineResult<void> {
    return run(async () => {
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw errors.invalidArgument(`port ${port} is out of range`, 'port');
      }
      await this.requirePod(sandbox.id).portForward(port, stream);
    });
  }

  containerStats(container: ContainerRef): EngineResult<ContainerStats> {
    return run(async () => {
      const rec = this.containerRecord(container);
      const s = await unwrap(this.requirePod(rec.sandboxId).request('Stats', { containerId: container.id }));
      return {
        timestamp: s.timestamp,
        cpuUsageCoreNanoSeconds: s.cpuUsageNs,
        memoryWorkingSetBytes: Number(s.memoryWorkingSet),
        memoryUsageBytes: Number(s.memoryUsage),
        writableLayerBytes: 0,
      };
    });
  }

  sandboxStats(sandbox: SandboxRef, _containers: readonly ContainerRef[] = []): EngineResult<SandboxStats> {
    return run(async () => {
      const s = await unwrap(this.requirePod(sandbox.id).request('PodStats', {}));
      return {
        timestamp: s.timestamp,
        cpuUsageCoreNanoSeconds: s.cpuUsageNs,
        memoryWorkingSetBytes: Number(s.memoryWorkingSet),
        memoryUsageBytes: Number(s.memoryUsage),
        network: { rxBytes: Number(s.rxBytes), txBytes: Number(s.txBytes) },
        processes: s.processes,
      };
    });
  }

  updateContainerResources(container: ContainerRef, resources: LinuxResources): EngineResult<void> {
    return run(async () => {
      const rec = this.containerRecord(container);
      await unwrap(
        this.requirePod(rec.sandboxId).request('UpdateResources', {
          containerId: container.id,
          resources: wireResources(resources),
        }),
      );
    });
  }

  reopenContainerLog(container: ContainerRef): EngineResult<void> {
    return run(async () => {
      const pod = this.podOf(container);
      const sink = pod?.sinks.get(container.id);
      if (sink === undefined) throw errors.notFound(`container ${container.id} has no log writer in this engine`);
      sink.reopen();
    });
  }

  subscribe(listener: (event: EngineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    await this.templates?.close();
    for (const pod of this.pods.values()) pod.detach(true);
    this.pods.clear();
    this.listeners.clear();
  }
}
