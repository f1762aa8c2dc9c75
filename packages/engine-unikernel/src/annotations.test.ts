import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@hcr/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  isUnikernelImage,
  loadUnikernelConfig,
  parseUruncJson,
  toAnnotations,
  uruncValuesFromImage,
  validateUruncValues,
  type RawUruncValues,
} from './annotations.js';

const base: RawUruncValues = { unikernelType: 'unikraft', hypervisor: 'qemu', binary: '/unikernel/app' };
const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('urunc annotations', () => {
  it('reads annotations first, labels as fallback', () => {
    const v = uruncValuesFromImage({
      annotations: { 'com.urunc.unikernel.binary': '/a' },
      labels: { 'com.urunc.unikernel.binary': '/b', 'com.urunc.unikernel.hypervisor': 'qemu' },
    });
    expect(v).toEqual({ binary: '/a', hypervisor: 'qemu' });
  });

  it('needs type, hypervisor and binary to call an image a unikernel', () => {
    expect(isUnikernelImage({ annotations: toAnnotations(base), labels: {} })).toBe(true);
    const { binary: _b, ...noBinary } = base;
    expect(isUnikernelImage({ annotations: toAnnotations(noBinary), labels: {} })).toBe(false);
  });

  it('validates a complete config with every optional key', () => {
    const r = validateUruncValues(
      {
        ...base,
        unikernelType: 'linux',
        initrd: '/boot/initrd',
        cmdline: '/init 8080',
        unikernelVersion: '6.1',
        mountRootfs: 'false',
      },
      'annotations',
    );
    expect(r._unsafeUnwrap()).toMatchObject({
      type: 'linux',
      monitor: 'qemu',
      initrd: '/boot/initrd',
      mountRootfs: false,
      cmdline: '/init 8080',
    });
  });

  it.each<[RawUruncValues, RegExp]>([
    [{ ...base, hypervisor: 'xen' }, /hypervisor="xen" is not a supported monitor/],
    [{ ...base, unikernelType: 'osv' }, /unikernelType="osv" is not a supported unikernel type/],
    [{ ...base, hypervisor: 'hvt' }, /hypervisor="hvt" cannot run unikernel type "unikraft"/],
    [{ ...base, binary: 'relative/app' }, /binary="relative\/app" must be an absolute path/],
    [{ ...base, binary: '/a/../etc/passwd' }, /binary="\/a\/..\/etc\/passwd" must be a clean path/],
    [{ ...base, binary: '/a b' }, /binary="\/a b" may only contain/],
    [{ ...base, initrd: '/' }, /initrd="\/" must name a file/],
    [{ ...base, mountRootfs: 'yes' }, /mountRootfs="yes" is not a boolean/],
    [{ ...base, blkMntPoint: '/data' }, /blkMntPoint="\/data" is set but com.urunc.unikernel.block is not/],
    [{ ...base, unikernelVersion: '1 2' }, /unikernelVersion="1 2" is not a version/],
    [{ ...base, cmdline: 'a\nb' }, /cmdline=.* contains a NUL or line break/],
    [{ ...base, binary: '' }, /binary="" is required/],
  ])('refuses %j naming key and value', (values, message) => {
    const e = validateUruncValues(values, 'annotations')._unsafeUnwrapErr();
    expect(e.code).toBe(ErrorCode.InvalidArgument);
    expect(e.message).toMatch(message);
    expect(e.details.field).toMatch(/^com\.urunc\.unikernel\./);
  });
});

describe('urunc.json', () => {
  let dir = '';
  afterEach(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('decodes base64 values (with or without the b64: prefix)', () => {
    const doc = JSON.stringify({
      'com.urunc.unikernel.unikernelType': b64('unikraft'),
      'com.urunc.unikernel.hypervisor': `b64:${b64('qemu')}`,
      'com.urunc.unikernel.binary': b64('/unikernel/app'),
      'com.urunc.unikernel.cmdline': b64('exit=3'),
      'com.urunc.unikernel.initrd': '',
    });
    expect(parseUruncJson(doc)._unsafeUnwrap()).toEqual({ ...base, cmdline: 'exit=3', initrd: '' });
  });

  it('refuses a value that is not base64, naming the key', () => {
    const e = parseUruncJson(JSON.stringify({ 'com.urunc.unikernel.binary': '/not base64!' }))._unsafeUnwrapErr();
    expect(e.message).toMatch(/com\.urunc\.unikernel\.binary="\/not base64!" is not valid base64/);
    expect(parseUruncJson('[1]')._unsafeUnwrapErr().message).toMatch(/JSON object/);
    expect(parseUruncJson('{')._unsafeUnwrapErr().message).toMatch(/not valid JSON/);
  });

  it('is the fallback when annotations are incomplete, and its source is named in errors', async () => {
    dir = await mkdtemp(join(tmpdir(), 'urunc-json-'));
    const image = { name: 'img', config: { annotations: {}, labels: {} } };
    expect((await loadUnikernelConfig(image, dir))._unsafeUnwrapErr().message).toMatch(/is not a unikernel image/);
    await writeFile(
      join(dir, 'urunc.json'),
      JSON.stringify({
        'com.urunc.unikernel.unikernelType': b64('linux'),
        'com.urunc.unikernel.hypervisor': b64('qemu'),
        'com.urunc.unikernel.binary': b64('/kernel'),
      }),
    );
    expect((await loadUnikernelConfig(image, dir))._unsafeUnwrap()).toMatchObject({
      type: 'linux',
      source: 'urunc.json',
    });
    await writeFile(
      join(dir, 'urunc.json'),
      JSON.stringify({
        'com.urunc.unikernel.unikernelType': b64('linux'),
        'com.urunc.unikernel.hypervisor': b64('hvt'),
        'com.urunc.unikernel.binary': b64('/kernel'),
      }),
    );
    expect((await loadUnikernelConfig(image, dir))._unsafeUnwrapErr().message).toMatch(
      /hypervisor="hvt" .*\(from urunc\.json\)/,
    );
    const annotated = { name: 'img', config: { annotations: toAnnotations(base), labels: {} } };
    expect((await loadUnikernelConfig(annotated, dir))._unsafeUnwrap().source).toBe('annotations');
  });
});
