import { status as Status, type ServiceError, Metadata } from '@grpc/grpc-js';
import { match } from 'ts-pattern';
import { toHcrError, type ErrorCode } from '@hcr/core';

/** The one place where HCR's error classes become gRPC status codes. */
export function grpcCode(code: ErrorCode): Status {
  return match(code)
    .with('NotFound', () => Status.NOT_FOUND)
    .with('AlreadyExists', () => Status.ALREADY_EXISTS)
    .with('InvalidArgument', () => Status.INVALID_ARGUMENT)
    .with('FailedPrecondition', () => Status.FAILED_PRECONDITION)
    .with('Unsupported', () => Status.UNIMPLEMENTED)
    .with('Unavailable', () => Status.UNAVAILABLE)
    .with('DeadlineExceeded', () => Status.DEADLINE_EXCEEDED)
    .with('ResourceExhausted', () => Status.RESOURCE_EXHAUSTED)
    .with('Internal', () => Status.INTERNAL)
    .exhaustive();
}

/**
 * Longest status message sent, in UTF-8 bytes. The message travels in an
 * HTTP/2 trailer: one over the client's header-list limit (64 KiB in Node,
 * less elsewhere) makes the client drop the connection, and with it every
 * other call on it. Messages quote request values, so a huge value is cut.
 */
export const MAX_STATUS_MESSAGE_BYTES = 4096;

/** `message` cut to {@link MAX_STATUS_MESSAGE_BYTES}, saying how much was left out. */
export function boundStatusMessage(message: string): string {
  const bytes = Buffer.from(message, 'utf8');
  if (bytes.length <= MAX_STATUS_MESSAGE_BYTES) return message;
  // Cut on a character boundary: decoding a byte prefix may end in U+FFFD, which is dropped.
  const head = bytes
    .subarray(0, MAX_STATUS_MESSAGE_BYTES - 64)
    .toString('utf8')
    .replace(/\uFFFD$/, '');
  return `${head}… (${bytes.length - Buffer.byteLength(head)} more bytes cut)`;
}

/** Normalises anything thrown by a handler into a gRPC error with a readable message. */
export function toServiceError(e: unknown): Partial<ServiceError> {
  const err = toHcrError(e);
  const metadata = new Metadata();
  if (err.details.engine !== undefined) metadata.set('hcr-engine', err.details.engine);
  if (err.details.capability !== undefined) metadata.set('hcr-capability', err.details.capability);
  if (err.details.field !== undefined) metadata.set('hcr-field', boundStatusMessage(err.details.field));
  const message = boundStatusMessage(err.message);
  return { code: grpcCode(err.code), details: message, message, metadata };
}
