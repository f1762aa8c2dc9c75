/**
 * Everything the bench starts registers how to undo it here, newest first, so
 * that a failed suite, an exception or Ctrl-C still leaves no pods, daemons,
 * bridges or temp dirs behind.
 */
export class Cleanup {
  private readonly actions: { readonly name: string; readonly run: () => Promise<void> }[] = [];
  private running: Promise<void> | null = null;

  /** Registers `run`; the returned function runs it now (once) and unregisters it. */
  defer(name: string, run: () => Promise<void> | void): () => Promise<void> {
    const action = { name, run: async () => run() };
    this.actions.push(action);
    return async () => {
      const i = this.actions.indexOf(action);
      if (i < 0) return;
      this.actions.splice(i, 1);
      await action.run();
    };
  }

  /** Runs every registered action (newest first); failures are reported, never fatal. */
  runAll(log: (line: string) => void): Promise<void> {
    this.running ??= (async () => {
      while (this.actions.length > 0) {
        const a = this.actions.pop() as (typeof this.actions)[number];
        try {
          await a.run();
        } catch (e) {
          log(`cleanup: ${a.name} failed: ${(e as Error).message}`);
        }
      }
    })();
    return this.running;
  }
}
