/**
 * Test-only crash injection. When `HCR_FAULT` names a point (e.g.
 * `runPodSandbox:after-cni`), the process kills itself with SIGKILL there, so
 * recovery tests can stop HCR between any two steps of an operation. Unset in
 * production; reading one environment variable costs nothing measurable.
 */
export function faultPoint(name: string): void {
  const want = process.env['HCR_FAULT'];
  if (want !== undefined && want === name) process.kill(process.pid, 'SIGKILL');
}

/** Every fault point, for tests that walk them all. */
export const FAULT_POINTS = [
  'runPodSandbox:after-record',
  'runPodSandbox:after-netns',
  'runPodSandbox:after-cni',
  'runPodSandbox:after-engine',
  'createContainer:after-record',
  'createContainer:after-engine',
  'startContainer:after-engine',
  'stopPodSandbox:after-containers',
  'stopPodSandbox:after-engine',
  'stopPodSandbox:after-cni',
  'removePodSandbox:after-containers',
  'removePodSandbox:after-engine',
  'removePodSandbox:after-netns',
] as const;
