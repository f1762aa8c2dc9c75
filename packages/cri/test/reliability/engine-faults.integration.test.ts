import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { containerConfig, cri, podConfig, rejectsWith } from '../helpers/cri.js';
import { BUSYBOX, REGISTRY, type TestShim } from '../helpers/shim.js';
import {
  allLeaks,
  docker,
  dockerState,
  startPrivateDockerd,
  startReliabilityShim,
  stateRecords,
  waitFor,
  type PrivateDockerd,
} from './harness.js';

type Cri = ReturnType<typeof cri>;

interface Condition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

const conditions = async (c: Cri) => {
  const st = await c.rt<{ status: { conditions: Condition[] } }>('Status', {});
  const get = (type: string) => st.status.conditions.find((x) => x.type === type);
  return { runtime: get('RuntimeReady'), network: get('NetworkReady') };
};

/** The gRPC code of a call's outcome (0 when it succeeded). */
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => status.OK,
    (e: { code?: number }) => e.code ?? -1,
  );

// Exits on SIGTERM at once, so stops do not wait out their grace period.
const sleeper = { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] };

const listedPodState = async (c: Cri, id: string) =>
  (await c.rt<{ items: { state: string }[] }>('ListPodSandbox', { filter: { id } })).items[0]?.state;
const listedContainerState = async (c: Cri, id: string) =>
  (await c.rt<{ containers: { state: string }[] }>('ListContainers', { filter: { id } })).containers[0]?.state;

// Faults of what HCR depends on: dockerd, the container processes, CNI
// plugins and the disk under the state dir. HCR must keep serving, tell the
// truth while the fault lasts, and converge once it is gone.
describe('engine and host faults (docker engine)', () => {
  let dockerd: PrivateDockerd;

  beforeAll(async () => {
    dockerd = await startPrivateDockerd();
  }, 120_000);

  afterAll(async () => {
    await dockerd?.close();
  }, 120_000);

  describe('dockerd and container processes', () => {
    let shim: TestShim;
    let c: Cri;
    const pods = new Set<string>();
    const runPod = async () => {
      const config = podConfig();
      const id = await c.runp(config);
      pods.add(id);
      const cid = await c.create(id, containerConfig(BUSYBOX, sleeper), config);
      await c.start(cid);
      return { id, config, cid };
    };

    beforeAll(async () => {
      shim = await startReliabilityShim(2);
      c = cri(shim);
      await c.pull(BUSYBOX);
    }, 300_000);

    afterEach(async () => {
      for (const id of pods) await c.rmp(id);
      pods.clear();
      expect(allLeaks(shim)).toEqual([]);
    }, 120_000);

    afterAll(async () => {
      await shim?.stop();
    }, 60_000);

    it('keeps serving while dockerd is down, says so, and recovers when it is back', async () => {
      const pod = await runPod();
      await dockerd.kill();

      const down = await waitFor('RuntimeReady to turn false', async () => {
        const cond = await conditions(c);
        return cond.runtime?.status === false ? cond : undefined;
      });
      expect(down.runtime?.reason).toBe('DockerUnreachable');
      expect(down.runtime?.message).toContain('hcr-reliability-docker.sock');
      expect(down.network?.status).toBe(true);
      // Everything served from HCR's own state still answers; what needs dockerd fails as Unavailable.
      expect((await c.rt<{ runtimeName: string }>('Version', {})).runtimeName).toBe('hcr');
      expect((await c.rt<{ items: unknown[] }>('ListPodSandbox', {})).items).toHaveLength(1);
      expect((await c.rt<{ containers: unknown[] }>('ListContainers', {})).containers).toHaveLength(1);
      expect([status.OK, status.UNAVAILABLE]).toContain(await codeOf(c.status(pod.cid)));
      expect([status.OK, status.UNAVAILABLE]).toContain(await codeOf(c.podStatus(pod.id)));
      const config = podConfig();
      const refused = await rejectsWith(c.runp(config), status.UNAVAILABLE);
      expect(refused).toMatch(/dockerd|docker/i);
      // The refused pod's network is released at once; the pod itself is listed NotReady until dockerd lets
      // HCR finish removing it (the kubelet may remove it too).
      expect(readdirNetns(shim)).toEqual([pod.id]);
      const listed = (await c.rt<{ items: { id: string; state: string }[] }>('ListPodSandbox', {})).items;
      expect(listed.filter((p) => p.id !== pod.id).map((p) => p.state)).toEqual(['SANDBOX_NOTREADY']);

      await dockerd.start();
      await waitFor('RuntimeReady to turn true', async () =>
        (await conditions(c)).runtime?.status === true ? true : undefined,
      );
      await waitFor('the refused pod to be finished off once dockerd is back', async () =>
        stateRecords(shim).sandboxes.length === 1 ? true : undefined,
      );
      expect((await c.rt<{ items: { id: string }[] }>('ListPodSandbox', {})).items.map((p) => p.id)).toEqual([pod.id]);
      // Without live-restore dockerd killed the pod's containers as it came back: report exactly that.
      await waitFor('the container to be reported exited', async () =>
        (await c.status(pod.cid)).state === 'CONTAINER_EXITED' ? true : undefined,
      );
      const st = await c.status(pod.cid);
      expect(dockerState('container', pod.cid)).toBe('exited');
      // dockerd sent the container SIGTERM as it came back; the trap made that exit 0: report what happened.
      const [code, finished] = docker([
        'inspect',
        '-f',
        '{{.State.ExitCode}} {{.State.FinishedAt}}',
        `hcr_container_${pod.cid}`,
      ]).split(' ');
      expect(st.exitCode).toBe(Number(code));
      expect(st.reason).toBe(Number(code) === 0 ? 'Completed' : 'Error');
      expect(Number(BigInt(st.finishedAt) / 1_000_000n)).toBe(Date.parse(finished ?? ''));
      expect((await c.podStatus(pod.id)).status.state).toBe('SANDBOX_NOTREADY');
      await waitFor('ListPodSandbox to agree', async () =>
        (await listedPodState(c, pod.id)) === 'SANDBOX_NOTREADY' ? true : undefined,
      );
      expect(await listedContainerState(c, pod.cid)).toBe('CONTAINER_EXITED');
      // The kubelet's next moves work: stop and remove the dead pod, run a new one.
      await c.stopp(pod.id);
      await c.rmp(pod.id);
      pods.delete(pod.id);
      const fresh = await runPod();
      expect((await c.status(fresh.cid)).state).toBe('CONTAINER_RUNNING');
    }, 180_000);

    it('keeps pods running across a dockerd restart with live-restore', async () => {
      await dockerd.stop();
      await dockerd.start({ liveRestore: true });
      try {
        await waitFor('RuntimeReady', async () => ((await conditions(c)).runtime?.status === true ? true : undefined));
        const pod = await runPod();
        await dockerd.kill();
        await waitFor('RuntimeReady to turn false', async () =>
          (await conditions(c)).runtime?.status === false ? true : undefined,
        );
        await dockerd.start({ liveRestore: true });
        await waitFor('RuntimeReady to turn true', async () =>
          (await conditions(c)).runtime?.status === true ? true : undefined,
        );
        expect((await c.status(pod.cid)).state).toBe('CONTAINER_RUNNING');
        expect((await c.podStatus(pod.id)).status.state).toBe('SANDBOX_READY');
        expect(await listedPodState(c, pod.id)).toBe('SANDBOX_READY');
        const r = await c.execSync(pod.cid, ['echo', 'still-here']);
        expect(r.stdout.toString()).toBe('still-here\n');
      } finally {
        for (const id of pods) await c.rmp(id);
        pods.clear();
        await dockerd.stop();
        await dockerd.start();
        await waitFor('RuntimeReady', async () => ((await conditions(c)).runtime?.status === true ? true : undefined));
      }
    }, 180_000);

    it('reports a container killed outside HCR as exited, and a killed infra container as a NotReady pod', async () => {
      const pod = await runPod();
      docker(['kill', docker(['ps', '-q', '--filter', `label=io.hcr.container-id=${pod.cid}`])]);
      await waitFor('ListContainers to show the exit', async () =>
        (await listedContainerState(c, pod.cid)) === 'CONTAINER_EXITED' ? true : undefined,
      );
      expect(await c.status(pod.cid)).toMatchObject({ state: 'CONTAINER_EXITED', exitCode: 137, reason: 'Error' });

      docker(['kill', docker(['ps', '-q', '--filter', `label=io.hcr.sandbox-id=${pod.id}`])]);
      await waitFor('ListPodSandbox to show the pod NotReady', async () =>
        (await listedPodState(c, pod.id)) === 'SANDBOX_NOTREADY' ? true : undefined,
      );
      expect((await c.podStatus(pod.id)).status.state).toBe('SANDBOX_NOTREADY');
      // StopPodSandbox still releases the network of a pod whose infra died.
      await c.stopp(pod.id);
      expect(readdirNetns(shim)).toEqual([]);
    }, 120_000);
  });

  describe('CNI plugin failures', () => {
    let shim: TestShim;
    let c: Cri;
    let bin: string;
    let conflist: string;
    let original: string;
    const pods = new Set<string>();

    /** Inserts a plugin of `type` after the bridge plugin in the shim's conflist. */
    const withPlugin = (type: string) => {
      const list = JSON.parse(original) as { plugins: { type: string }[] };
      list.plugins.splice(1, 0, { type });
      writeFileSync(conflist, JSON.stringify(list));
    };

    beforeAll(async () => {
      bin = mkdtempSync(join(tmpdir(), 'hcr-cni-bin-'));
      // A chained CNI plugin that passes the previous result through, except for the
      // commands listed in the file `fail-on` (so a test can break and heal it).
      const failOn = join(bin, 'fail-on');
      const plugin = join(bin, 'hcr-flaky');
      writeFileSync(
        plugin,
        [
          `#!${process.execPath}`,
          "const fs = require('node:fs');",
          'const cmd = process.env.CNI_COMMAND;',
          "const conf = JSON.parse(fs.readFileSync(0, 'utf8') || '{}');",
          "if (cmd === 'VERSION') {",
          "  console.log(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] }));",
          '  process.exit(0);',
          '}',
          `const failing = fs.existsSync(${JSON.stringify(failOn)}) ? fs.readFileSync(${JSON.stringify(failOn)}, 'utf8').split('\\n') : [];`,
          'if (failing.includes(cmd)) {',
          "  console.log(JSON.stringify({ cniVersion: conf.cniVersion, code: 100, msg: `injected ${cmd} failure`, details: 'hcr reliability test' }));",
          '  process.exit(1);',
          '}',
          "if (cmd === 'ADD') console.log(JSON.stringify({ cniVersion: conf.cniVersion, ...conf.prevResult }));",
        ].join('\n'),
      );
      chmodSync(plugin, 0o755);
      shim = await startReliabilityShim(3, { cniBinDirs: [bin, '/usr/lib/cni'] });
      c = cri(shim);
      await c.pull(BUSYBOX);
      conflist = join(shim.dir, 'cni', '10-test.conflist');
      original = readFileSync(conflist, 'utf8');
    }, 300_000);

    afterEach(async () => {
      writeFileSync(conflist, original);
      rmSync(join(bin, 'fail-on'), { force: true });
      for (const id of pods) await c.rmp(id);
      pods.clear();
      expect(allLeaks(shim)).toEqual([]);
    }, 120_000);

    afterAll(async () => {
      await shim?.stop();
      if (bin) rmSync(bin, { recursive: true, force: true });
    }, 60_000);

    it('fails RunPodSandbox cleanly when a plugin fails ADD, and runs pods once it is fixed', async () => {
      withPlugin('hcr-flaky');
      writeFileSync(join(bin, 'fail-on'), 'ADD\n');
      const config = podConfig();
      const code = await codeOf(c.runp(config));
      expect([status.INTERNAL, status.UNAVAILABLE]).toContain(code);
      const msg = await c.runp(config).catch((e: { details: string }) => e.details);
      expect(msg).toMatch(/plugin "hcr-flaky".*injected ADD failure/);
      // The bridge plugin ran before the failure: its IP and veth were released by the rollback.
      expect(allLeaks(shim)).toEqual([]);
      expect((await c.rt<{ items: unknown[] }>('ListPodSandbox', {})).items).toEqual([]);

      rmSync(join(bin, 'fail-on'));
      writeFileSync(conflist, original);
      const id = await c.runp(config);
      pods.add(id);
      expect((await c.podStatus(id)).status.state).toBe('SANDBOX_READY');
    }, 120_000);

    it('keeps a pod whose CNI DEL fails until DEL works, then removes it without leaks', async () => {
      withPlugin('hcr-flaky');
      const config = podConfig();
      const id = await c.runp(config);
      pods.add(id);
      writeFileSync(join(bin, 'fail-on'), 'DEL\n');
      const msg = await c.rmp(id).then(
        () => 'removed',
        (e: { code: number; details: string }) => `${e.code}: ${e.details}`,
      );
      expect(msg).toMatch(/injected DEL failure/);
      // Not half-gone: still listed (NotReady) so the kubelet retries the removal.
      expect((await c.rt<{ items: { id: string }[] }>('ListPodSandbox', {})).items.map((p) => p.id)).toEqual([id]);
      expect((await c.podStatus(id)).status.state).toBe('SANDBOX_NOTREADY');
      rmSync(join(bin, 'fail-on'));
      await c.rmp(id);
      pods.delete(id);
      await rejectsWith(c.podStatus(id), status.NOT_FOUND);
    }, 120_000);

    it('reports NetworkReady false naming a missing plugin, and refuses pods without leaving anything', async () => {
      withPlugin('hcr-not-installed');
      const cond = await conditions(c);
      expect(cond.network?.status).toBe(false);
      expect(cond.network?.reason).not.toBe('');
      expect(cond.network?.message).toContain('hcr-not-installed');
      expect(cond.runtime?.status).toBe(true);
      const msg = await rejectsWith(c.runp(podConfig()), status.UNAVAILABLE);
      expect(msg).toContain('hcr-not-installed');
      expect(allLeaks(shim)).toEqual([]);
      writeFileSync(conflist, original);
      expect((await conditions(c)).network?.status).toBe(true);
    }, 60_000);
  });

  describe('disk full under the state dir', () => {
    let shim: TestShim;
    let c: Cri;
    let mnt: string;
    const pods = new Set<string>();
    const filler = () => join(mnt, 'filler');

    /** Fills the tmpfs: blocks with one big file, or inodes with many empty ones. */
    const fill = (what: 'blocks' | 'inodes') => {
      if (what === 'blocks') {
        try {
          execFileSync('dd', ['if=/dev/zero', `of=${filler()}`, 'bs=64k'], { stdio: 'ignore' });
        } catch {
          // dd ends with ENOSPC: that is the point
        }
        return;
      }
      mkdirSync(join(mnt, 'inodes'), { recursive: true });
      for (let i = 0; ; i++) {
        try {
          writeFileSync(join(mnt, 'inodes', String(i)), '');
        } catch {
          return;
        }
      }
    };
    const free = () => {
      rmSync(filler(), { force: true });
      rmSync(join(mnt, 'inodes'), { recursive: true, force: true });
    };

    beforeAll(async () => {
      mnt = mkdtempSync(join(tmpdir(), 'hcr-state-tmpfs-'));
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m,nr_inodes=4096,mode=0700', 'hcr-reliability-state', mnt]);
      shim = await startReliabilityShim(4, { stateDir: join(mnt, 'state') });
      c = cri(shim);
      await c.pull(BUSYBOX);
    }, 300_000);

    afterEach(async () => {
      free();
      for (const id of pods) await c.rmp(id);
      pods.clear();
      expect(allLeaks(shim)).toEqual([]);
    }, 120_000);

    afterAll(async () => {
      await shim?.stop();
      if (mnt) {
        execFileSync('umount', [mnt]);
        rmSync(mnt, { recursive: true, force: true });
      }
    }, 60_000);

    for (const what of ['blocks', 'inodes'] as const) {
      it(`refuses changes with a clear error when the state dir runs out of ${what}, and recovers`, async () => {
        const before = podConfig();
        const ready = await c.runp(before);
        pods.add(ready);
        const cid = await c.create(ready, containerConfig(BUSYBOX, sleeper), before);
        fill(what);

        const config = podConfig();
        const failure = await c.runp(config).then(
          (id) => {
            pods.add(id);
            return null;
          },
          (e: { code: number; details: string }) => e,
        );
        if (what === 'blocks') {
          expect(failure).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
          expect(failure?.details).toMatch(/state\.db: the filesystem is full/);
        } else if (failure !== null) {
          // Inodes run out only where a step makes a new file (the CNI record); the state db's WAL appends still fit.
          expect(failure).toMatchObject({ code: status.RESOURCE_EXHAUSTED });
          expect(failure.details).toMatch(/no space left on device/);
        }
        // What HCR already had is intact and still served.
        expect((await c.podStatus(ready)).status.state).toBe('SANDBOX_READY');
        expect((await c.status(cid)).state).toBe('CONTAINER_CREATED');
        expect((await c.rt<{ runtimeName: string }>('Version', {})).runtimeName).toBe('hcr');

        free();
        // A restart reads the state db back: nothing was corrupted, nothing half-made survives recovery.
        await shim.kill();
        await shim.restart();
        const records = stateRecords(shim);
        expect([...records.sandboxes, ...records.containers].filter((r) => /:(creating|removing)$/.test(r))).toEqual(
          [],
        );
        expect((await c.podStatus(ready)).status.state).toBe('SANDBOX_READY');
        await c.start(cid);
        expect((await c.status(cid)).state).toBe('CONTAINER_RUNNING');
        const again = await c.runp(config).catch(async (e: { code: number }) => {
          // The pod from the full-disk attempt may have been made after all (inodes case): then it exists.
          if (e.code !== status.ALREADY_EXISTS) throw e;
          return null;
        });
        if (again !== null) pods.add(again);
      }, 180_000);
    }
  });
});

/** Pids of the QEMU processes whose command line names `needle`. */
function qemuNaming(needle: string): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .filter((e) => {
      try {
        const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8');
        return argv.split('\0')[0]?.includes('qemu-system') === true && argv.includes(needle);
      } catch {
        return false;
      }
    })
    .map(Number);
}

// A VM killed under HCR: the hyper pod's QEMU, a unikernel container's QEMU.
describe('VM engine faults', () => {
  const sleeper = { command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'] };

  it('reports a hyper pod whose QEMU was killed as NotReady with its container exited, and removes it cleanly', async () => {
    delete process.env['DOCKER_HOST'];
    const shim = await startReliabilityShim(12, { engines: ['hyper'] });
    const c = cri(shim);
    let pod = '';
    try {
      await c.pull(BUSYBOX);
      const config = podConfig();
      pod = await c.runp(config, 'hyper');
      const cid = await c.create(pod, containerConfig(BUSYBOX, sleeper), config);
      await c.start(cid);
      const qemu = qemuNaming(pod.slice(0, 12));
      expect(qemu).toHaveLength(1);
      process.kill(qemu[0]!, 'SIGKILL');
      await waitFor('the pod to be NotReady in List and Status', async () =>
        (await c.podStatus(pod)).status.state === 'SANDBOX_NOTREADY' &&
        (await listedPodState(c, pod)) === 'SANDBOX_NOTREADY'
          ? true
          : undefined,
      );
      const st = await waitFor('the container to leave RUNNING', async () => {
        const x = await c.status(cid);
        return x.state === 'CONTAINER_RUNNING' ? undefined : x;
      });
      expect(['CONTAINER_EXITED', 'CONTAINER_UNKNOWN']).toContain(st.state);
      expect(st.reason).not.toBe('');
      await c.stopp(pod);
      await c.rmp(pod);
      expect(allLeaks(shim)).toEqual([]);
    } finally {
      // Pods outlive the shim by design: remove this one even when the test failed half-way.
      if (pod !== '') await c.rmp(pod).catch(() => undefined);
      await shim.stop();
    }
  }, 300_000);

  it('reports a hyper pod whose guest agent crashed: the exec fails naming it, pod NotReady, container exited; removes cleanly', async () => {
    delete process.env['DOCKER_HOST'];
    // The test-only hook: every pod VM's agent (PID 1 of the guest) aborts on its first Exec request.
    const shim = await startReliabilityShim(14, { engines: ['hyper'], env: { HCR_AGENT_FAULT: 'abort:Exec' } });
    const c = cri(shim);
    let pod = '';
    try {
      await c.pull(BUSYBOX);
      const config = podConfig();
      pod = await c.runp(config, 'hyper');
      const cid = await c.create(pod, containerConfig(BUSYBOX, sleeper), config);
      await c.start(cid);
      expect(qemuNaming(pod.slice(0, 12))).toHaveLength(1);
      const msg = await rejectsWith(c.execSync(cid, ['echo', 'never']), status.FAILED_PRECONDITION);
      expect(msg).toMatch(/guest agent of pod .* died.*Attempted to kill init/);
      await waitFor('the pod to be NotReady in List and Status', async () =>
        (await c.podStatus(pod)).status.state === 'SANDBOX_NOTREADY' &&
        (await listedPodState(c, pod)) === 'SANDBOX_NOTREADY'
          ? true
          : undefined,
      );
      await waitFor('ListContainers to show the exit', async () =>
        (await listedContainerState(c, cid)) === 'CONTAINER_EXITED' ? true : undefined,
      );
      expect(await c.status(cid)).toMatchObject({
        state: 'CONTAINER_EXITED',
        exitCode: 255,
        reason: 'GuestAgentCrashed',
      });
      // The panic ended QEMU (panic=-1, -no-reboot): nothing of the VM runs any more.
      expect(qemuNaming(pod.slice(0, 12))).toEqual([]);
      await c.stopp(pod);
      await c.rmp(pod);
      expect(allLeaks(shim)).toEqual([]);
    } finally {
      if (pod !== '') await c.rmp(pod).catch(() => undefined);
      await shim.stop();
    }
  }, 300_000);

  it('reports a unikernel container whose QEMU was killed as exited with a reason; the pod removes cleanly', async () => {
    delete process.env['DOCKER_HOST'];
    const shim = await startReliabilityShim(13, { engines: ['unikernel'] });
    const c = cri(shim);
    const image = `${REGISTRY}/hcr-test/unikernel-http:latest`;
    let pod = '';
    try {
      await c.pull(image);
      const config = podConfig();
      pod = await c.runp(config, 'unikernel');
      const cid = await c.create(pod, containerConfig(image), config);
      await c.start(cid);
      const qemu = qemuNaming(`hcr-${cid.slice(0, 12)}`);
      expect(qemu).toHaveLength(1);
      process.kill(qemu[0]!, 'SIGKILL');
      await waitFor('ListContainers to show the exit', async () =>
        (await listedContainerState(c, cid)) === 'CONTAINER_EXITED' ? true : undefined,
      );
      const st = await c.status(cid);
      expect(st.state).toBe('CONTAINER_EXITED');
      expect(st.exitCode).not.toBe(0);
      expect(st.reason).not.toBe('');
      await c.rmp(pod);
      expect(allLeaks(shim)).toEqual([]);
    } finally {
      // Pods outlive the shim by design: remove this one even when the test failed half-way.
      if (pod !== '') await c.rmp(pod).catch(() => undefined);
      await shim.stop();
    }
  }, 300_000);
});

function readdirNetns(shim: TestShim): string[] {
  const dir = join(shim.dir, 'run', 'netns');
  return existsSync(dir) ? readdirSync(dir) : [];
}
