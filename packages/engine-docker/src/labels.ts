/**
 * Docker labels HCR puts on every object it makes, so the engine can find its
 * objects again from dockerd alone (after an HCR restart, for removal of
 * objects no record owns, and to filter Docker's event stream).
 */
export const Label = {
  sandboxId: 'io.hcr.sandbox-id',
  containerId: 'io.hcr.container-id',
  kind: 'io.hcr.kind',
  engine: 'io.hcr.engine',
  /** The CRI log path, so a re-created engine can resume copying the container's output. */
  logPath: 'io.hcr.log-path',
} as const;

/** The kinds of Docker containers HCR makes. */
export type ObjectKind = 'sandbox' | 'container';

/** The Docker container name of an HCR object: `hcr_<kind>_<hcr id>`. */
export function dockerName(kind: ObjectKind, id: string): string {
  return `hcr_${kind}_${id}`;
}

/** Labels for a pod's infra container. */
export function sandboxLabels(engine: string, sandboxId: string): Record<string, string> {
  return { [Label.engine]: engine, [Label.kind]: 'sandbox', [Label.sandboxId]: sandboxId };
}

/** Labels for an app container. */
export function containerLabels(
  engine: string,
  sandboxId: string,
  containerId: string,
  logPath: string,
): Record<string, string> {
  return {
    [Label.engine]: engine,
    [Label.kind]: 'container',
    [Label.sandboxId]: sandboxId,
    [Label.containerId]: containerId,
    ...(logPath === '' ? {} : { [Label.logPath]: logPath }),
  };
}
