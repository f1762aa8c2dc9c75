import { fieldSchema, type ConfigOf } from '@hcr/core';

/** Where `scripts/setup-assets.sh` puts the static pause binary. */
export const DEFAULT_PAUSE_BINARY = '/var/lib/hcr/assets/pause/pause';

/** The documented config keys of the docker engine (`[engines.NAME]` table). */
export const dockerConfigFields = [
  {
    key: 'socket',
    type: 'string',
    default: '/var/run/docker.sock',
    description: 'Unix socket of the Docker Engine API.',
  },
  {
    key: 'pauseBinary',
    type: 'string',
    default: DEFAULT_PAUSE_BINARY,
    description: 'Static pause program (built by packages/engine-docker/scripts/setup-assets.sh) for infra containers.',
  },
  {
    key: 'pauseImage',
    type: 'string',
    default: 'hcr.local/pause',
    description:
      'Repository the pause binary is imported into dockerd as; the tag is a digest of the binary, so a rebuilt pause gets a new image.',
  },
  {
    key: 'healthTimeoutMs',
    type: 'number',
    default: 3000,
    description: 'Bound on the health probe (a ping and version call); dockerd slower than this is reported unready.',
  },
  {
    key: 'logMaxSize',
    type: 'string',
    default: '50m',
    description:
      "Size of dockerd's own json-file log per container before it rotates; bounds what an HCR outage can replay into the CRI log.",
  },
  {
    key: 'logMaxFiles',
    type: 'number',
    default: 2,
    description: 'Number of dockerd json-file log files kept per container (see logMaxSize).',
  },
  {
    key: 'logDrainTimeoutMs',
    type: 'number',
    default: 30_000,
    description:
      "How long ContainerStatus and the exit event wait for a stopped container's remaining output to reach its CRI log.",
  },
  {
    key: 'execSyncMaxOutputBytes',
    type: 'number',
    default: 16 * 1024 * 1024,
    description: 'ExecSync keeps at most this many bytes of stdout and of stderr; the rest is dropped.',
  },
] as const;

/** The schema `hcr serve` validates the engine's config table with. */
export const dockerConfigSchema = fieldSchema(dockerConfigFields);

/** Parsed config of a docker engine instance. */
export type DockerEngineConfig = ConfigOf<typeof dockerConfigFields>;
