import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { HcrConfig } from './config.js';

/** Verdict of one doctor check. */
export type Verdict = 'OK' | 'WARN' | 'FAIL';

interface Check {
  readonly name: string;
  run(): Promise<{ verdict: Verdict; detail: string; fix?: string }>;
}

/** Where the checks look; tests point them at an empty machine. */
export interface DoctorOptions {
  /** Guest assets and pause binary root (default `/var/lib/hcr/assets`). */
  readonly assetsDir?: string;
  /** Search path for host binaries (default `$PATH`). */
  readonly path?: string;
}

let searchPath = process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin';

function onPath(bin: string): string | null {
  for (const dir of searchPath.split(':')) {
    if (dir === '') continue;
    const p = join(dir, bin);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // keep looking
    }
  }
  return null;
}

function run(bin: string, args: string[], timeoutMs = 5000): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) =>
    execFile(bin, args, { timeout: timeoutMs }, (e, stdout, stderr) =>
      resolve({ ok: e === null, out: `${stdout}${stderr}`.trim() }),
    ),
  );
}

function dockerPing(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: '/_ping', timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

/** Runs every host check, printing `VERDICT  name: detail (fix: …)`; returns the worst verdict. */
export async function runDoctor(
  config: HcrConfig,
  print: (line: string) => void,
  options: DoctorOptions = {},
): Promise<Verdict> {
  const dockerEngine = Object.values(config.engines).find((e) => e.kind === 'docker');
  const dockerSocket = String(dockerEngine?.options['socket'] ?? '/var/run/docker.sock');
  const assets = options.assetsDir ?? '/var/lib/hcr/assets';
  searchPath = options.path ?? process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin';
  const checks: Check[] = [
    {
      name: 'dockerd',
      async run() {
        if (!existsSync(dockerSocket)) {
          return {
            verdict: 'FAIL',
            detail: `no socket at ${dockerSocket}`,
            fix: 'apt-get install docker.io && dockerd &',
          };
        }
        return (await dockerPing(dockerSocket))
          ? { verdict: 'OK', detail: `answers on ${dockerSocket}` }
          : {
              verdict: 'FAIL',
              detail: `${dockerSocket} does not answer`,
              fix: 'start dockerd (scripts/setup.sh does)',
            };
      },
    },
    {
      name: 'runc',
      async run() {
        const p = onPath('runc');
        return p
          ? { verdict: 'OK', detail: p }
          : { verdict: 'FAIL', detail: 'runc not found', fix: 'apt-get install runc' };
      },
    },
    {
      name: 'qemu',
      async run() {
        const p = onPath('qemu-system-x86_64');
        if (p === null)
          return { verdict: 'FAIL', detail: 'qemu-system-x86_64 not found', fix: 'apt-get install qemu-system-x86' };
        const v = await run(p, ['--version']);
        return { verdict: 'OK', detail: v.out.split('\n')[0] ?? p };
      },
    },
    {
      name: 'kvm',
      async run() {
        if (!existsSync('/dev/kvm'))
          return { verdict: 'WARN', detail: 'no /dev/kvm: VMs use software emulation (TCG), slower boots' };
        return {
          verdict: 'WARN',
          detail:
            '/dev/kvm exists; the VM engines probe it with a timeout at start and fall back to TCG when nested guests hang (see `hcr engines`)',
        };
      },
    },
    {
      name: 'cni config',
      async run() {
        const dir = config.cni.confDir;
        const files = existsSync(dir)
          ? readdirSync(dir).filter((f) => f.endsWith('.conflist') || f.endsWith('.conf'))
          : [];
        return files.length > 0
          ? { verdict: 'OK', detail: `${dir}/${files.sort()[0]}` }
          : {
              verdict: 'FAIL',
              detail: `no network config in ${dir}`,
              fix: 'scripts/setup.sh writes a default bridge conflist',
            };
      },
    },
    {
      name: 'cni plugins',
      async run() {
        const need = ['bridge', 'host-local', 'portmap', 'firewall', 'loopback'];
        const missing = need.filter((p) => !config.cni.binDirs.some((d) => existsSync(join(d, p))));
        return missing.length === 0
          ? { verdict: 'OK', detail: `found in ${config.cni.binDirs.join(', ')}` }
          : {
              verdict: 'FAIL',
              detail: `missing ${missing.join(', ')}`,
              fix: 'apt-get install containernetworking-plugins',
            };
      },
    },
    {
      name: 'host tools',
      async run() {
        const missing = ['nsenter', 'unshare', 'ip', 'tc', 'socat', 'mount'].filter((t) => onPath(t) === null);
        return missing.length === 0
          ? { verdict: 'OK', detail: 'nsenter, unshare, ip, tc, socat, mount' }
          : {
              verdict: 'FAIL',
              detail: `missing ${missing.join(', ')}`,
              fix: 'apt-get install util-linux iproute2 socat',
            };
      },
    },
    {
      name: 'pause binary',
      async run() {
        const p = join(assets, 'pause', 'pause');
        return existsSync(p)
          ? { verdict: 'OK', detail: p }
          : { verdict: 'FAIL', detail: `${p} missing`, fix: 'packages/engine-docker/scripts/setup-assets.sh' };
      },
    },
    {
      name: 'guest assets',
      async run() {
        const p = join(assets, 'hyper', 'current');
        return existsSync(p)
          ? { verdict: 'OK', detail: p }
          : {
              verdict: 'FAIL',
              detail: `${p} missing (hyper pods cannot start)`,
              fix: 'packages/engine-hyper/scripts/setup-assets.sh',
            };
      },
    },
    {
      name: 'socket',
      async run() {
        if (!existsSync(config.socket))
          return { verdict: 'WARN', detail: `${config.socket} absent (hcr serve not running)` };
        const st = statSync(config.socket);
        const mode = st.mode & 0o777;
        return mode === 0o660 && st.uid === 0
          ? { verdict: 'OK', detail: `${config.socket} root-owned, mode 0660` }
          : {
              verdict: 'FAIL',
              detail: `${config.socket} has mode ${mode.toString(8)} uid ${st.uid}`,
              fix: 'restart hcr serve as root',
            };
      },
    },
    {
      name: 'cgroups',
      async run() {
        if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return { verdict: 'OK', detail: 'cgroup v2 (unified)' };
        if (existsSync('/sys/fs/cgroup/memory')) return { verdict: 'OK', detail: 'cgroup v1 (cgroupfs driver)' };
        return { verdict: 'FAIL', detail: '/sys/fs/cgroup is not mounted', fix: 'mount cgroup filesystems' };
      },
    },
  ];
  let worst: Verdict = 'OK';
  for (const c of checks) {
    const r = await c.run();
    if (r.verdict === 'FAIL' || (r.verdict === 'WARN' && worst === 'OK')) worst = r.verdict;
    print(`${r.verdict.padEnd(4)}  ${c.name}: ${r.detail}${r.fix ? `  (fix: ${r.fix})` : ''}`);
  }
  return worst;
}
