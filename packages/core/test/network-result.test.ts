import { describe, expect, it } from 'vitest';
import { podNetworkFromResult } from '../src/network/result.js';

const ns = '/run/hcr/netns/p1';

describe('CNI result → PodNetwork', () => {
  it('reads a bridge result: pod interfaces only, IPs without prefix, gateway of the primary IP', () => {
    const result = {
      cniVersion: '1.0.0',
      interfaces: [
        { name: 'cni0', mac: 'aa:aa:aa:aa:aa:01' },
        { name: 'veth1234', mac: 'aa:aa:aa:aa:aa:02' },
        { name: 'eth0', mac: 'aa:aa:aa:aa:aa:03', sandbox: ns },
      ],
      ips: [{ interface: 2, address: '10.88.0.5/16', gateway: '10.88.0.1' }],
      routes: [{ dst: '0.0.0.0/0' }],
    };
    expect(podNetworkFromResult(result, ns, 'eth0')._unsafeUnwrap()).toEqual({
      netnsPath: ns,
      ips: ['10.88.0.5'],
      interfaces: [{ name: 'eth0', mac: 'aa:aa:aa:aa:aa:03', addresses: ['10.88.0.5/16'] }],
      gateway: '10.88.0.1',
      cniResult: result,
    });
  });

  it('puts the IPv4 address of the pod interface first, then IPv6, then other interfaces', () => {
    const result = {
      cniVersion: '0.4.0',
      interfaces: [
        { name: 'net1', mac: 'aa:00:00:00:00:01', sandbox: ns },
        { name: 'eth0', mac: 'aa:00:00:00:00:02', sandbox: ns },
      ],
      ips: [
        { version: '4', interface: 0, address: '192.168.5.2/24' },
        { version: '6', interface: 1, address: 'fd00::5/64', gateway: 'fd00::1' },
        { version: '4', interface: 1, address: '10.1.0.5/24', gateway: '10.1.0.1' },
      ],
    };
    const net = podNetworkFromResult(result, ns, 'eth0')._unsafeUnwrap();
    expect(net.ips).toEqual(['10.1.0.5', 'fd00::5', '192.168.5.2']);
    expect(net.gateway).toBe('10.1.0.1');
    expect(net.interfaces.map((i) => [i.name, i.addresses])).toEqual([
      ['net1', ['192.168.5.2/24']],
      ['eth0', ['fd00::5/64', '10.1.0.5/24']],
    ]);
  });

  it('credits addresses without an interface to the pod interface, and takes the gateway from the default route', () => {
    const result = {
      cniVersion: '1.0.0',
      ips: [{ address: '10.2.0.9/24' }],
      routes: [
        { dst: '10.0.0.0/8', gw: '10.2.0.254' },
        { dst: '0.0.0.0/0', gw: '10.2.0.1' },
      ],
    };
    expect(podNetworkFromResult(result, ns, 'eth0')._unsafeUnwrap()).toMatchObject({
      ips: ['10.2.0.9'],
      interfaces: [{ name: 'eth0', mac: '', addresses: ['10.2.0.9/24'] }],
      gateway: '10.2.0.1',
    });
  });

  it('reads CNI 0.2.0 results (ip4/ip6)', () => {
    const result = { cniVersion: '0.2.0', ip4: { ip: '10.3.0.4/16', gateway: '10.3.0.1' }, ip6: { ip: 'fd01::4/64' } };
    expect(podNetworkFromResult(result, ns, 'eth0')._unsafeUnwrap()).toMatchObject({
      ips: ['10.3.0.4', 'fd01::4'],
      gateway: '10.3.0.1',
    });
  });

  it('gives an empty network when the plugins assigned no address', () => {
    expect(podNetworkFromResult({ cniVersion: '1.0.0' }, ns, 'eth0')._unsafeUnwrap()).toMatchObject({
      ips: [],
      interfaces: [],
      gateway: null,
    });
  });

  it('refuses malformed results with a reason', () => {
    expect(podNetworkFromResult('x', ns, 'eth0')._unsafeUnwrapErr()).toBe('the result is not a JSON object');
    expect(podNetworkFromResult({ ips: [{ address: 'nope' }] }, ns, 'eth0')._unsafeUnwrapErr()).toBe(
      'ips[0] has no valid "address"',
    );
    expect(podNetworkFromResult({ ips: {} }, ns, 'eth0')._unsafeUnwrapErr()).toBe('"ips" is not a list');
    expect(podNetworkFromResult({ interfaces: [{ mac: 'x' }] }, ns, 'eth0')._unsafeUnwrapErr()).toBe(
      'interfaces[0] has no "name"',
    );
  });
});
