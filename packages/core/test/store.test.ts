import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteStateStore } from '../src/store/sqlite.js';
import { parse, stringify } from '../src/store/json.js';

const dir = mkdtempSync(join(tmpdir(), 'hcr-store-'));
const here = fileURLToPath(new URL('.', import.meta.url));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('state store', () => {
  it('round-trips bigints', () => {
    const v = { a: 1n << 62n, b: [2n], c: { $n: 'x', other: 1 } };
    expect(parse(stringify(v))).toEqual(v);
  });

  it('keeps every acknowledged write across a kill -9 of the writer', async () => {
    const db = join(dir, 'kill.db');
    // The child writes records one by one, printing each id only after putSandbox returned,
    // and is SIGKILLed mid-stream. Every id it printed must be in the store afterwards.
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(here, 'fixtures/store-writer.ts'), db], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const acked: string[] = [];
    let buf = '';
    await new Promise<void>((done) => {
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop() ?? '';
        acked.push(...lines.filter((l) => l !== ''));
        if (acked.length >= 50 && child.exitCode === null) child.kill('SIGKILL');
      });
      child.on('exit', () => done());
    });
    expect(child.signalCode).toBe('SIGKILL');
    expect(acked.length).toBeGreaterThanOrEqual(50);
    const store = new SqliteStateStore(db);
    const ids = new Set(store.listSandboxes().map((s) => s.id));
    for (const id of acked) expect(ids.has(id)).toBe(true);
    store.close();
  });

  it('updates and deletes records', () => {
    const store = new SqliteStateStore(join(dir, 'crud.db'));
    const rec = { id: 's1', key: 'k', phase: 'ready' } as never;
    store.putSandbox(rec);
    store.putContainer({ id: 'c1', sandboxId: 's1' } as never);
    store.putContainer({ id: 'c2', sandboxId: 's2' } as never);
    expect(store.listContainers('s1').map((c) => c.id)).toEqual(['c1']);
    store.deleteContainer('c1');
    store.deleteSandbox('s1');
    store.close();
    const again = new SqliteStateStore(join(dir, 'crud.db'));
    expect(again.getSandbox('s1')).toBeUndefined();
    expect(again.listContainers().map((c) => c.id)).toEqual(['c2']);
    again.close();
  });
});
