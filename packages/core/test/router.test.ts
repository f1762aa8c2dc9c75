import { describe, expect, it } from 'vitest';
import {
  bindByImage,
  checkImageFits,
  routePod,
  type EngineCapabilities,
  type EngineView,
  type ImageInfo,
  type RouterConfig,
} from '../src/index.js';
import { podSpec } from '../src/testing/specs.js';

const caps = (over: Partial<EngineCapabilities>): EngineCapabilities => ({
  hostNetwork: true,
  hostPid: true,
  hostIpc: true,
  privileged: true,
  exec: true,
  execSync: true,
  attach: true,
  attachStdin: true,
  portForward: true,
  tty: true,
  hostPathMounts: true,
  updateResources: true,
  stats: true,
  reopenLog: true,
  imageKinds: ['oci'],
  ...over,
});

const engines = new Map<string, EngineView>([
  ['docker', { capabilities: caps({}), healthy: true }],
  [
    'hyper',
    { capabilities: caps({ hostNetwork: false, hostPid: false, hostIpc: false, privileged: false }), healthy: true },
  ],
  [
    'unikernel',
    {
      capabilities: caps({
        hostNetwork: false,
        hostPid: false,
        hostIpc: false,
        privileged: false,
        exec: false,
        imageKinds: ['unikernel'],
      }),
      healthy: true,
    },
  ],
]);

const config: RouterConfig = {
  handlers: { runc: 'docker', hyper: 'hyper', unikernel: 'unikernel', ghost: 'nowhere' },
  defaultEngine: 'docker',
  rules: [
    { engine: 'hyper', namespaces: ['untrusted'] },
    { engine: 'hyper', labels: { tier: 'sandboxed' } },
  ],
  deferBinding: false,
  unikernelEngine: 'unikernel',
};

const hostNet = () => {
  const s = podSpec();
  return { ...s, linux: { ...s.linux, namespaces: { ...s.linux.namespaces, network: 'node' as const } } };
};

const image = (kind: ImageInfo['kind']): ImageInfo => ({
  id: 'sha256:' + 'a'.repeat(64),
  repoTags: ['example/app:1'],
  repoDigests: [],
  size: 1,
  config: { entrypoint: [], cmd: [], env: [], workingDir: '', user: '', exposedPorts: [], labels: {}, annotations: {} },
  kind,
  pinned: false,
});

describe('router', () => {
  it('takes the runtime handler first', () => {
    const d = routePod(
      podSpec({ runtimeHandler: 'hyper', annotations: { 'hcr.io/engine': 'docker' } }),
      config,
      engines,
    )._unsafeUnwrap();
    expect(d).toMatchObject({ engine: 'hyper', source: 'handler' });
    expect(d.reason).toContain('runtime handler "hyper"');
  });

  it('refuses an unknown handler naming the known ones', () => {
    const e = routePod(podSpec({ runtimeHandler: 'kata' }), config, engines)._unsafeUnwrapErr();
    expect(e.code).toBe('NotFound');
    expect(e.message).toMatch(/kata.*runc/);
  });

  it('refuses a handler mapped to an engine that is not running', () => {
    expect(routePod(podSpec({ runtimeHandler: 'ghost' }), config, engines)._unsafeUnwrapErr().code).toBe(
      'InvalidArgument',
    );
  });

  it('uses the engine annotation next', () => {
    expect(
      routePod(podSpec({ annotations: { 'hcr.io/engine': 'hyper' } }), config, engines)._unsafeUnwrap(),
    ).toMatchObject({
      engine: 'hyper',
      source: 'annotation',
    });
  });

  it('applies rules by namespace and by labels', () => {
    const s = podSpec();
    expect(
      routePod({ ...s, metadata: { ...s.metadata, namespace: 'untrusted' } }, config, engines)._unsafeUnwrap(),
    ).toMatchObject({
      engine: 'hyper',
      source: 'rule',
    });
    expect(routePod(podSpec({ labels: { tier: 'sandboxed' } }), config, engines)._unsafeUnwrap().engine).toBe('hyper');
  });

  it('never silently downgrades: a pinned VM engine refuses host network, naming the capability', () => {
    const e = routePod({ ...hostNet(), runtimeHandler: 'hyper' }, config, engines)._unsafeUnwrapErr();
    expect(e.code).toBe('Unsupported');
    expect(e.details.capability).toBe('hostNetwork');
    expect(e.message).toMatch(/host network/);
  });

  it('sends an unpinned privileged or host-network pod to an engine that can run it', () => {
    const d = routePod(hostNet(), { ...config, defaultEngine: 'hyper' }, engines)._unsafeUnwrap();
    expect(d).toMatchObject({ engine: 'docker', source: 'security' });
  });

  it('refuses when no engine can run the pod', () => {
    const only = new Map([...engines].filter(([n]) => n !== 'docker'));
    expect(routePod(hostNet(), { ...config, defaultEngine: 'hyper' }, only)._unsafeUnwrapErr().code).toBe(
      'Unsupported',
    );
  });

  it('falls back to the default engine, or defers binding when enabled', () => {
    expect(routePod(podSpec(), config, engines)._unsafeUnwrap()).toMatchObject({ engine: 'docker', source: 'default' });
    expect(routePod(podSpec(), { ...config, deferBinding: true }, engines)._unsafeUnwrap()).toMatchObject({
      engine: null,
      source: 'deferred',
    });
  });

  it('binds a deferred pod by its first image', () => {
    expect(bindByImage(podSpec(), image('unikernel'), config, engines)._unsafeUnwrap()).toMatchObject({
      engine: 'unikernel',
      source: 'image',
    });
    expect(bindByImage(podSpec(), image('oci'), config, engines)._unsafeUnwrap().engine).toBe('docker');
    expect(bindByImage(podSpec(), image('unikernel'), { ...config, unikernelEngine: null }, engines).isErr()).toBe(
      true,
    );
  });

  it('refuses pods mixing unikernel and ordinary images', () => {
    const uk = engines.get('unikernel')!;
    expect(checkImageFits('unikernel', uk, image('oci'))._unsafeUnwrapErr().message).toMatch(/cannot mix/);
    expect(checkImageFits('docker', engines.get('docker')!, image('unikernel'))._unsafeUnwrapErr().code).toBe(
      'FailedPrecondition',
    );
    expect(checkImageFits('unikernel', uk, image('unikernel')).isOk()).toBe(true);
  });
});
