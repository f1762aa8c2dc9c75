import { fieldSchema, type ConfigOf } from '@hcr/core';

/** The documented config keys of the gvisor engine (`[engines.NAME]` table with `kind = "gvisor"`). */
export const gvisorConfigFields = [
  {
    key: 'runsc',
    type: 'string',
    default: '/usr/bin/runsc',
    description: 'The runsc binary (Debian package runsc).',
  },
  {
    key: 'platform',
    type: 'string',
    default: 'ptrace',
    description:
      'How the gVisor kernel intercepts application system calls (`runsc help platforms`). ptrace works everywhere, ' +
      'kvm needs a usable /dev/kvm, systrap exists from runsc 2023 on.',
  },
  {
    key: 'root',
    type: 'string',
    default: '',
    description: "runsc's state directory (--root); empty means `runsc` under the engine's runtime directory.",
  },
  {
    key: 'cgroupParent',
    type: 'string',
    default: '/hcr-gvisor',
    description:
      'cgroupfs parent for pods that carry resource limits but no cgroup parent from the kubelet; a pod cgroup ' +
      'holds the whole gVisor sandbox (kernel, gofers, application memory).',
  },
  {
    key: 'debugLogDir',
    type: 'string',
    default: '',
    description: 'When set, every runsc invocation writes debug logs there (--debug --debug-log=DIR/).',
  },
  {
    key: 'probeTimeoutMs',
    type: 'number',
    default: 20_000,
    description:
      'Bound on the start-up probe (`runsc do true` on the configured platform); a platform that hangs here, ' +
      'like kvm under nested virtualisation, leaves the engine unready instead of hanging pods.',
  },
  {
    key: 'commandTimeoutMs',
    type: 'number',
    default: 60_000,
    description: 'Bound on one runsc command (create, start, kill, delete, state, events).',
  },
  {
    key: 'execSyncMaxOutputBytes',
    type: 'number',
    default: 16 * 1024 * 1024,
    description: 'ExecSync keeps at most this many bytes of stdout and of stderr; the rest is dropped.',
  },
] as const;

/** The schema `hcr serve` validates the engine's config table with. */
export const gvisorConfigSchema = fieldSchema(gvisorConfigFields);

/** Parsed config of a gvisor engine instance. */
export type GvisorEngineConfig = ConfigOf<typeof gvisorConfigFields>;
