/**
 * The closed set of error classes every HCR operation can fail with.
 *
 * Each class mirrors one gRPC status code so that only the API boundary (the CRI
 * adapter) converts; engines and core attach context, never transport codes.
 */
export const ErrorCode = {
  NotFound: 'NotFound',
  AlreadyExists: 'AlreadyExists',
  InvalidArgument: 'InvalidArgument',
  FailedPrecondition: 'FailedPrecondition',
  Unsupported: 'Unsupported',
  Unavailable: 'Unavailable',
  DeadlineExceeded: 'DeadlineExceeded',
  ResourceExhausted: 'ResourceExhausted',
  Internal: 'Internal',
} as const;

/** One of the error classes in {@link ErrorCode}. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Extra, structured context an error may carry (shown to operators, never parsed). */
export interface ErrorDetails {
  /** The engine that produced the error, when one did. */
  readonly engine?: string;
  /** The capability an engine lacks (for {@link ErrorCode.Unsupported}). */
  readonly capability?: string;
  /** The offending request field, dotted (for {@link ErrorCode.InvalidArgument}). */
  readonly field?: string;
}

/** The one error type of HCR: a code from the closed set, a message a person can act on. */
export class HcrError extends Error {
  override readonly name = 'HcrError';
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: ErrorDetails } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }

  /** Returns a copy whose message is prefixed with `context: `. */
  withContext(context: string): HcrError {
    return new HcrError(this.code, `${context}: ${this.message}`, { cause: this.cause, details: this.details });
  }
}

/** True when `e` is an {@link HcrError}, optionally of the given code. */
export function isHcrError(e: unknown, code?: ErrorCode): e is HcrError {
  return e instanceof HcrError && (code === undefined || e.code === code);
}

/** System error codes that mean the host ran out of room, not that HCR is broken. */
const EXHAUSTED_ERRNOS = new Set(['ENOSPC', 'EDQUOT']);

/**
 * Normalises anything thrown into an {@link HcrError}: a full disk or quota
 * becomes `ResourceExhausted` (the operator frees space and retries); other
 * unknown failures become `Internal`.
 */
export function toHcrError(e: unknown, context?: string): HcrError {
  const errno = e instanceof Error ? (e as NodeJS.ErrnoException).code : undefined;
  const err =
    e instanceof HcrError
      ? e
      : new HcrError(
          errno !== undefined && EXHAUSTED_ERRNOS.has(errno) ? ErrorCode.ResourceExhausted : ErrorCode.Internal,
          e instanceof Error ? e.message : String(e),
          { cause: e },
        );
  return context === undefined ? err : err.withContext(context);
}

/** Shorthand constructors, one per class. */
export const errors = {
  notFound: (message: string, details?: ErrorDetails) => new HcrError(ErrorCode.NotFound, message, opt(details)),
  alreadyExists: (message: string, details?: ErrorDetails) =>
    new HcrError(ErrorCode.AlreadyExists, message, opt(details)),
  invalidArgument: (message: string, field?: string) =>
    new HcrError(ErrorCode.InvalidArgument, message, field === undefined ? {} : { details: { field } }),
  failedPrecondition: (message: string, details?: ErrorDetails) =>
    new HcrError(ErrorCode.FailedPrecondition, message, opt(details)),
  unsupported: (engine: string, capability: string, message?: string) =>
    new HcrError(ErrorCode.Unsupported, message ?? `engine "${engine}" does not support ${capability}`, {
      details: { engine, capability },
    }),
  unavailable: (message: string, cause?: unknown, details?: ErrorDetails) =>
    new HcrError(ErrorCode.Unavailable, message, { cause, ...opt(details) }),
  deadlineExceeded: (message: string) => new HcrError(ErrorCode.DeadlineExceeded, message),
  resourceExhausted: (message: string) => new HcrError(ErrorCode.ResourceExhausted, message),
  internal: (message: string, cause?: unknown) => new HcrError(ErrorCode.Internal, message, { cause }),
} as const;

function opt(details: ErrorDetails | undefined): { details?: ErrorDetails } {
  return details === undefined ? {} : { details };
}
