import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, expect, it } from 'vitest';
import { runPodAndReadLogs } from '../src/run-pod.js';

const conf = mkdtempSync(join(tmpdir(), 'hcr-embed-cni-'));
writeFileSync(
  join(conf, '10-embed.conflist'),
  JSON.stringify({
    cniVersion: '1.0.0',
    name: 'hcr-embed',
    plugins: [
      {
        type: 'bridge',
        bridge: 'hcremb0',
        isGateway: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.96.7.0/24' }]], dataDir: join(conf, 'ipam') },
      },
    ],
  }),
);

afterAll(() => {
  try {
    execFileSync('ip', ['link', 'del', 'hcremb0'], { stdio: 'ignore' });
  } catch {
    // never created
  }
  rmSync(conf, { recursive: true, force: true });
});

it('runs a pod through the library and reads its log', async () => {
  const r = await runPodAndReadLogs({ image: '127.0.0.1:5000/hcr-test/busybox:latest', cniConfDir: conf });
  expect(r.exitCode).toBe(0);
  expect(r.podIp).toMatch(/^10\.96\.7\.\d+$/);
  expect(r.lines).toContain('hello from embedded');
}, 180_000);
