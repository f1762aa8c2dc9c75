import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { errors } from '../errors.js';
import { parse, stringify } from './json.js';
import type { ContainerRecord, SandboxRecord, StateStore } from './records.js';

/**
 * The state store on SQLite (WAL journal, `synchronous=FULL`): each put is one
 * transaction that is durable when it returns. Records are also kept in memory,
 * so reads (ListContainers of thousands) never touch the disk.
 */
export class SqliteStateStore implements StateStore {
  private readonly db: Database.Database;
  private readonly sandboxes = new Map<string, SandboxRecord>();
  private readonly containers = new Map<string, ContainerRecord>();
  private readonly stmts;

  constructor(private readonly path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, record TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS containers (id TEXT PRIMARY KEY, sandbox_id TEXT NOT NULL, record TEXT NOT NULL);
      INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '1');
    `);
    this.stmts = {
      putSandbox: this.db.prepare('INSERT OR REPLACE INTO sandboxes (id, record) VALUES (?, ?)'),
      delSandbox: this.db.prepare('DELETE FROM sandboxes WHERE id = ?'),
      putContainer: this.db.prepare('INSERT OR REPLACE INTO containers (id, sandbox_id, record) VALUES (?, ?, ?)'),
      delContainer: this.db.prepare('DELETE FROM containers WHERE id = ?'),
    };
    for (const row of this.db.prepare('SELECT record FROM sandboxes').all() as { record: string }[]) {
      const r = parse<SandboxRecord>(row.record);
      this.sandboxes.set(r.id, r);
    }
    for (const row of this.db.prepare('SELECT record FROM containers').all() as { record: string }[]) {
      const r = parse<ContainerRecord>(row.record);
      this.containers.set(r.id, r);
    }
  }

  putSandbox(record: SandboxRecord): void {
    this.write(() => this.stmts.putSandbox.run(record.id, stringify(record)));
    this.sandboxes.set(record.id, record);
  }

  getSandbox(id: string): SandboxRecord | undefined {
    return this.sandboxes.get(id);
  }

  listSandboxes(): readonly SandboxRecord[] {
    return [...this.sandboxes.values()];
  }

  deleteSandbox(id: string): void {
    this.write(() => this.stmts.delSandbox.run(id));
    this.sandboxes.delete(id);
  }

  putContainer(record: ContainerRecord): void {
    this.write(() => this.stmts.putContainer.run(record.id, record.sandboxId, stringify(record)));
    this.containers.set(record.id, record);
  }

  getContainer(id: string): ContainerRecord | undefined {
    return this.containers.get(id);
  }

  listContainers(sandboxId?: string): readonly ContainerRecord[] {
    const all = [...this.containers.values()];
    return sandboxId === undefined ? all : all.filter((c) => c.sandboxId === sandboxId);
  }

  deleteContainer(id: string): void {
    this.write(() => this.stmts.delContainer.run(id));
    this.containers.delete(id);
  }

  close(): void {
    this.db.close();
  }

  /**
   * Runs one write. A full disk is the operator's to fix, so it is reported
   * as ResourceExhausted naming the database; the in-memory copy is only
   * updated after the write succeeded, so a refused write changes nothing.
   */
  private write(run: () => unknown): void {
    try {
      run();
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === 'SQLITE_FULL') {
        throw errors.resourceExhausted(
          `cannot record HCR state in ${this.path}: the filesystem is full (${(e as Error).message}); free space there and retry`,
        );
      }
      throw errors.internal(`cannot record HCR state in ${this.path}: ${(e as Error).message}`, e);
    }
  }
}
