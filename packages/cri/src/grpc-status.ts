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

/** Normalises anything thrown by a handler into a gRPC error with a readable message. */
export function toServiceError(e: unknown): Partial<ServiceError> {
  const err = toHcrError(e);
  const metadata = new Metadata();
  if (err.details.engine !== undefined) metadata.set('hcr-engine', err.details.engine);
  if (err.details.capability !== undefined) metadata.set('hcr-capability', err.details.capability);
  if (err.details.field !== undefined) metadata.set('hcr-field', err.details.field);
  return { code: grpcCode(err.code), details: err.message, message: err.message, metadata };
}
