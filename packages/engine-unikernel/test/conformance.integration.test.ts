import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CniNetworkManager, OciImageService, silentLogger } from '@hcr/core';
import { engineConformanceSuite } from '@hcr/core/testing';
import registration from '../src/index.js';
import { HELLO_IMAGE, processesMentioning } from './harness.js';

const run = promisify(execFile);

// The hello unikernel is the workload: it prints its command line (so `echo`
// is an argument it prints) and exits with `exit=<code>`; without one it idles.
engineConformanceSuite({
  name: 'unikernel',
  timeoutSeconds: 30,
  setup: async () => {
    await run('bash', [join(import.meta.dirname, '../scripts/setup-assets.sh')], {
      env: { ...process.env, HCR_SETUP_QUIET: '1' },
    });
    // Not under /tmp: the image store's overlay upper dirs need a filesystem that is not overlayfs.
    const dir = await mkdtemp('/var/tmp/hcr-uk-conformance-');
    const images = (await OciImageService.open({ root: join(dir, 'images'), logger: silentLogger }))._unsafeUnwrap();
    const network = new CniNetworkManager({ netnsDir: join(dir, 'netns'), cacheDir: join(dir, 'cni') });
    const runtimeDir = join(dir, 'run');
    const config = registration.configSchema.parse({});
    if (!config.ok) throw new Error(config.error);
    const engine = (
      await registration.create(config.value, {
        name: 'unikernel',
        logger: silentLogger,
        runtimeDir,
        stateDir: join(dir, 'state'),
        images,
      })
    )._unsafeUnwrap();
    return {
      engine,
      images,
      network,
      workload: {
        image: HELLO_IMAGE,
        longRunning: { command: [], args: ['idle'] },
        echo: (text: string) => ({ command: [], args: ['exit=0', text] }),
        exitWith: (code: number) => ({ command: [], args: [`exit=${code}`] }),
      },
      async leaks() {
        const vms = (await processesMentioning(runtimeDir)).map((pid) => `process ${pid} runs from ${runtimeDir}`);
        const dirs = (await readdir(join(runtimeDir, 'containers')).catch(() => [])).map((d) => `container dir ${d}`);
        return [...vms, ...dirs];
      },
      async close() {
        await engine.close();
        // The network manager makes its netns dir a mount point (as `ip netns` does).
        await run('umount', ['--lazy', join(dir, 'netns')]).catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
});
