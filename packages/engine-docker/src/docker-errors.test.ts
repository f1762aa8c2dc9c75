import { describe, expect, it } from 'vitest';
import { fromDocker } from './docker-errors.js';

const dockerError = (statusCode: number, message: string) =>
  Object.assign(new Error(`(HTTP code ${statusCode}) ${message}`), { statusCode, json: { message } });

describe('fromDocker', () => {
  it('classes a 500 about a stopped container as FailedPrecondition, other 500s as Internal', () => {
    const stopped = fromDocker(dockerError(500, 'Container abc is not running: Exited (0)'), 'exec in container x');
    expect(stopped).toMatchObject({
      code: 'FailedPrecondition',
      message: 'exec in container x: Container abc is not running: Exited (0)',
    });
    expect(fromDocker(dockerError(500, 'runc did not terminate successfully'), 'update').code).toBe('Internal');
    expect(fromDocker(dockerError(409, 'is not running'), 'x').code).toBe('FailedPrecondition');
  });
});
