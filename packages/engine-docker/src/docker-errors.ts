import { errors, HcrError, isHcrError } from '@hcr/core';

/** The HTTP status of a failed Docker API call (docker-modem sets `statusCode`), if any. */
export function dockerStatus(e: unknown): number | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const code = (e as { statusCode?: unknown }).statusCode;
  return typeof code === 'number' ? code : undefined;
}

/** True for "no such container/image/exec". */
export const isDockerNotFound = (e: unknown): boolean => dockerStatus(e) === 404;
/** True for a name conflict or "removal already in progress". */
export const isDockerConflict = (e: unknown): boolean => dockerStatus(e) === 409;
/** True for "container already started/stopped". */
export const isDockerNotModified = (e: unknown): boolean => dockerStatus(e) === 304;

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** True when the error says dockerd could not be reached at all. */
export function isDockerUnreachable(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && UNREACHABLE.has(code);
}

/** Docker's own message (`{"message": …}` body) when there is one, else the error text. */
export function dockerMessage(e: unknown): string {
  if (typeof e === 'object' && e !== null) {
    const json = (e as { json?: unknown }).json;
    if (typeof json === 'object' && json !== null) {
      const message = (json as { message?: unknown }).message;
      if (typeof message === 'string' && message !== '') return message;
    }
    if (Buffer.isBuffer(json) && json.length > 0) return json.toString('utf8').trim();
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * Converts a Docker API failure into the HCR error class it stands for,
 * prefixed with what HCR was doing, keeping dockerd's own message.
 */
export function fromDocker(e: unknown, context: string, socket?: string): HcrError {
  if (isHcrError(e)) return e.withContext(context);
  if (e instanceof Error && (e.name === 'AbortError' || e.name === 'TimeoutError'))
    return errors.deadlineExceeded(`${context}: dockerd did not answer in time`);
  if (isDockerUnreachable(e)) {
    const where = socket === undefined ? 'dockerd' : `dockerd at ${socket}`;
    return errors.unavailable(`${context}: cannot reach ${where} (${dockerMessage(e)}); is dockerd running?`, e);
  }
  const message = `${context}: ${dockerMessage(e)}`;
  switch (dockerStatus(e)) {
    case 400:
      return errors.invalidArgument(message);
    case 404:
      return errors.notFound(message);
    case 409:
      return errors.failedPrecondition(message);
    case 500:
      // dockerd 20.10 answers an exec in a stopped container with 500 (later versions: 409).
      return /\bis not running\b/.test(message) ? errors.failedPrecondition(message) : errors.internal(message, e);
    case undefined:
      return new HcrError('Internal', message, { cause: e });
    default:
      return errors.internal(message, e);
  }
}
