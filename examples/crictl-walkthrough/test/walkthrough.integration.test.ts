import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { cri } from '../../../packages/cri/test/helpers/cri.js';
import { startShim, type TestShim } from '../../../packages/cri/test/helpers/shim.js';

// CI has no crictl, so this test feeds the walkthrough's own JSON files through
// the CRI socket exactly as crictl would (crictl reads them as snake_case
// protobuf JSON) and checks the decisions the walkthrough shows.
const here = (f: string) => fileURLToPath(new URL(`../${f}`, import.meta.url));
const camel = (v: unknown): unknown =>
  Array.isArray(v)
    ? v.map(camel)
    : v !== null && typeof v === 'object'
      ? Object.fromEntries(
          Object.entries(v).map(([k, x]) => [k.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()), camel(x)]),
        )
      : v;
const spec = (f: string) => camel(JSON.parse(readFileSync(here(f), 'utf8'))) as Record<string, unknown>;

let shim: TestShim;
let c: ReturnType<typeof cri>;

beforeAll(async () => {
  shim = await startShim({ engines: ['docker', 'unikernel'], defaultEngine: 'docker' });
  c = cri(shim);
}, 120_000);
afterAll(async () => {
  for (const p of (await c.rt<{ items: { id: string }[] }>('ListPodSandbox', {})).items) await c.rmp(p.id);
  await shim?.stop();
}, 120_000);

it('puts the walkthrough pods where the walkthrough says', async () => {
  const busybox = spec('container-busybox.json');
  const hello = spec('container-unikernel.json');
  await c.pull((busybox['image'] as { image: string }).image);
  await c.pull((hello['image'] as { image: string }).image);
  const decisions: Record<string, { engine: string; routing: { source: string } }> = {};
  for (const [name, container] of [
    ['docker', busybox],
    ['unikernel', hello],
  ] as const) {
    const pod = { ...spec(`pod-${name}.json`), logDirectory: `${shim.dir}/logs/${name}` };
    const id = await c.runp(pod);
    const cid = await c.create(id, container, pod);
    await c.start(cid);
    decisions[name] = JSON.parse((await c.podStatus(id)).info['info'] ?? '{}') as never;
  }
  // Deferred binding is on (a unikernel engine exists): an ordinary image binds to the default engine.
  expect(decisions['docker']).toMatchObject({ engine: shim.engineName('docker'), routing: { source: 'image' } });
  expect(decisions['unikernel']).toMatchObject({ engine: shim.engineName('unikernel'), routing: { source: 'image' } });
}, 240_000);
