import { err, ok, type Result } from 'neverthrow';
import { errors, type HcrError } from '../errors.js';
import type { Capability, EngineCapabilities } from '../engine.js';
import type { ImageInfo, SandboxSpec } from '../types.js';

/** Pod annotation naming the engine explicitly (like a RuntimeClass, per pod). */
export const ENGINE_ANNOTATION = 'hcr.io/engine';

/** Why an engine was chosen, in order of precedence. */
export type RoutingSource = 'handler' | 'annotation' | 'rule' | 'image' | 'security' | 'default';

/** The router's verdict for a pod, kept with the pod and shown in verbose status. */
export interface RoutingDecision {
  /** The engine, or null when binding is deferred until the first container's image is known. */
  readonly engine: string | null;
  readonly source: RoutingSource | 'deferred';
  /** A sentence a person can read, e.g. `runtime handler "hyper" maps to engine "hyper"`. */
  readonly reason: string;
}

/** A configured routing rule: pods matching every given selector go to `engine`. */
export interface RoutingRule {
  readonly engine: string;
  readonly namespaces?: readonly string[];
  /** Label selector: every key must equal the value. */
  readonly labels?: Readonly<Record<string, string>>;
}

/** Router configuration (from `[router]` and `[runtimes.*]` in the TOML config). */
export interface RouterConfig {
  /** RuntimeClass handler name → engine name. `''` is the default handler. */
  readonly handlers: Readonly<Record<string, string>>;
  /** Engine used when nothing else decides. */
  readonly defaultEngine: string;
  readonly rules: readonly RoutingRule[];
  /** When true, pods nothing pins are left unbound until their first image is known. */
  readonly deferBinding: boolean;
  /** Engine for unikernel images (deferred binding), if one is configured. */
  readonly unikernelEngine: string | null;
}

/** The router's view of one engine. */
export interface EngineView {
  readonly capabilities: EngineCapabilities;
  readonly healthy: boolean;
}

/** The capabilities a pod spec needs from its engine. */
export function requiredCapabilities(spec: SandboxSpec): Capability[] {
  const need: Capability[] = [];
  if (spec.linux.namespaces.network === 'node') need.push('hostNetwork');
  if (spec.linux.namespaces.pid === 'node') need.push('hostPid');
  if (spec.linux.namespaces.ipc === 'node') need.push('hostIpc');
  if (spec.linux.privileged) need.push('privileged');
  return need;
}

const capabilityText: Partial<Record<Capability, string>> = {
  hostNetwork: 'host network (hostNetwork: true)',
  hostPid: 'the host PID namespace (hostPID: true)',
  hostIpc: 'the host IPC namespace (hostIPC: true)',
  privileged: 'privileged mode',
};

/** Human wording of a capability for error messages. */
export function describeCapability(c: Capability): string {
  return capabilityText[c] ?? c;
}

/**
 * Chooses the engine for a pod. Precedence: runtime handler, the
 * {@link ENGINE_ANNOTATION} annotation, configured rules, security needs, then
 * either deferral (when enabled) or the default engine. A pinned engine that
 * cannot give what the pod needs is an error naming the capability, never a
 * silent downgrade; an unpinned pod goes to the first healthy engine that can.
 */
export function routePod(
  spec: SandboxSpec,
  config: RouterConfig,
  engines: ReadonlyMap<string, EngineView>,
): Result<RoutingDecision, HcrError> {
  const need = requiredCapabilities(spec);
  const check = (engine: string, decision: RoutingDecision): Result<RoutingDecision, HcrError> => {
    const view = engines.get(engine);
    if (view === undefined) {
      return err(
        errors.invalidArgument(
          `${decision.reason}, but no engine "${engine}" is configured (configured: ${[...engines.keys()].join(', ')})`,
        ),
      );
    }
    const missing = need.find((c) => !view.capabilities[c]);
    if (missing !== undefined) {
      return err(
        errors.unsupported(
          engine,
          missing,
          `${decision.reason}, but engine "${engine}" cannot give this pod ${describeCapability(missing)}; ` +
            `run it on an engine that supports ${missing} or drop the setting`,
        ),
      );
    }
    return ok(decision);
  };

  const handler = spec.runtimeHandler;
  if (handler !== '') {
    const engine = config.handlers[handler];
    if (engine === undefined) {
      return err(
        errors.notFound(
          `no runtime handler "${handler}" is configured (known: ${Object.keys(config.handlers)
            .filter((h) => h !== '')
            .join(', ')})`,
        ),
      );
    }
    return check(engine, {
      engine,
      source: 'handler',
      reason: `runtime handler "${handler}" maps to engine "${engine}"`,
    });
  }

  const annotated = spec.annotations[ENGINE_ANNOTATION];
  if (annotated !== undefined && annotated !== '') {
    return check(annotated, {
      engine: annotated,
      source: 'annotation',
      reason: `pod annotation ${ENGINE_ANNOTATION}="${annotated}"`,
    });
  }

  for (const [i, rule] of config.rules.entries()) {
    if (ruleMatches(rule, spec)) {
      return check(rule.engine, { engine: rule.engine, source: 'rule', reason: `routing rule #${i + 1} matched` });
    }
  }

  if (need.length > 0) {
    const fit = [...engines.entries()].filter(([, v]) => need.every((c) => v.capabilities[c]));
    const preferred =
      fit.find(([name, v]) => name === config.defaultEngine && v.healthy) ?? fit.find(([, v]) => v.healthy);
    if (preferred === undefined) {
      return err(
        errors.unsupported(
          '*',
          need[0] ?? 'privileged',
          `pod needs ${need.map(describeCapability).join(', ')} and no healthy engine supports it`,
        ),
      );
    }
    return ok({
      engine: preferred[0],
      source: 'security',
      reason: `pod needs ${need.map(describeCapability).join(', ')}; engine "${preferred[0]}" supports it`,
    });
  }

  if (config.deferBinding && config.unikernelEngine !== null && engines.has(config.unikernelEngine)) {
    return ok({
      engine: null,
      source: 'deferred',
      reason: 'no handler, annotation or rule pins this pod; the engine is chosen from its first container image',
    });
  }

  return check(config.defaultEngine, {
    engine: config.defaultEngine,
    source: 'default',
    reason: `no handler, annotation or rule pins this pod; default engine "${config.defaultEngine}"`,
  });
}

/**
 * Binds a deferred pod once its first container image is known: unikernel
 * images go to the unikernel engine, everything else to the default engine.
 */
export function bindByImage(
  spec: SandboxSpec,
  image: ImageInfo,
  config: RouterConfig,
  engines: ReadonlyMap<string, EngineView>,
): Result<RoutingDecision, HcrError> {
  if (image.kind === 'unikernel') {
    const engine = config.unikernelEngine;
    if (engine === null || !engines.has(engine)) {
      return err(
        errors.failedPrecondition(
          `image ${image.repoTags[0] ?? image.id} is a unikernel image but no unikernel engine is configured`,
        ),
      );
    }
    return ok({
      engine,
      source: 'image',
      reason: `first container image ${image.repoTags[0] ?? image.id} is a unikernel image (com.urunc.unikernel.* annotations); engine "${engine}"`,
    });
  }
  const engine = config.defaultEngine;
  void spec;
  return ok({
    engine,
    source: 'image',
    reason: `first container image ${image.repoTags[0] ?? image.id} is an ordinary OCI image; default engine "${engine}"`,
  });
}

/**
 * Checks that a container image fits the engine a pod is bound to: a pod mixing
 * unikernel and ordinary images is refused with a clear message.
 */
export function checkImageFits(engine: string, view: EngineView, image: ImageInfo): Result<void, HcrError> {
  if (view.capabilities.imageKinds.includes(image.kind)) return ok(undefined);
  const name = image.repoTags[0] ?? image.id;
  return err(
    errors.failedPrecondition(
      image.kind === 'unikernel'
        ? `image ${name} is a unikernel image, but this pod runs on engine "${engine}"; a pod cannot mix unikernel and ordinary images`
        : `image ${name} is an ordinary OCI image, but this pod runs on unikernel engine "${engine}"; a pod cannot mix unikernel and ordinary images`,
    ),
  );
}

function ruleMatches(rule: RoutingRule, spec: SandboxSpec): boolean {
  if (rule.namespaces !== undefined && !rule.namespaces.includes(spec.metadata.namespace)) return false;
  if (rule.labels !== undefined) {
    for (const [k, v] of Object.entries(rule.labels)) if (spec.labels[k] !== v) return false;
  }
  return rule.namespaces !== undefined || rule.labels !== undefined;
}
