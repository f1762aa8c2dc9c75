import { describe, expect, it } from 'vitest';
import { errors, toHcrError } from '../src/errors.js';

describe('toHcrError', () => {
  it('classes a full disk or quota as ResourceExhausted and other failures as Internal', () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, open '/x'"), { code: 'ENOSPC' });
    expect(toHcrError(enospc, 'recording the CNI attachment')).toMatchObject({
      code: 'ResourceExhausted',
      message: "recording the CNI attachment: ENOSPC: no space left on device, open '/x'",
    });
    expect(toHcrError(Object.assign(new Error('quota'), { code: 'EDQUOT' })).code).toBe('ResourceExhausted');
    expect(toHcrError(Object.assign(new Error('gone'), { code: 'ENOENT' })).code).toBe('Internal');
    expect(toHcrError('boom').code).toBe('Internal');
    expect(toHcrError(errors.notFound('x')).code).toBe('NotFound');
  });
});
