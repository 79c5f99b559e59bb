import { DEFAULT_SETTINGS } from '@meshkv/ring';
import { expect } from 'chai';
import {
  applyRegistryDelta,
  idProblem,
  type Member,
  nodeIdProblem,
  PROTOCOL_VERSION,
  parseHandshakeAuth,
  parseJoinRequest,
  parseRegistryDelta,
  parseReply,
  parseSignalRequest,
  type RegistrySnapshot,
  registryDelta,
  registryProblem,
  settingsProblem,
} from '../src/signaling-protocol.ts';

const settings = { clusterId: 'c', ...DEFAULT_SETTINGS };

function member(nodeId: string, epoch: number, state: Member['state'] = 'up'): Member {
  return { nodeId, kind: 'node', state, joinedAtEpoch: 1, changedAtEpoch: epoch };
}

describe('signaling protocol: validation', () => {
  it('accepts safe ids up to 64 bytes and names what is wrong with others', () => {
    expect(idProblem('node-1.a_b:c', 'nodeId')).to.equal(undefined);
    expect(idProblem('x'.repeat(64), 'clusterId')).to.equal(undefined);
    expect(idProblem('x'.repeat(65), 'clusterId')).to.equal('clusterId is longer than 64 bytes');
    // Node ids leave room for replica ids `${nodeId}@${incarnation}` within 64 bytes.
    expect(nodeIdProblem('x'.repeat(52), 'nodeId')).to.equal(undefined);
    expect(nodeIdProblem('x'.repeat(53), 'nodeId')).to.match(/longer than 52 characters/);
    expect(nodeIdProblem('a#1', 'nodeId')).to.match(/only A-Z/);
    expect(parseJoinRequest({ clusterId: 'c', kind: 'node', nodeId: 'x'.repeat(53) }).ok).to.equal(
      false,
    );
    expect(parseJoinRequest({ clusterId: 'c', kind: 'node', nodeId: 'x'.repeat(52) }).ok).to.equal(
      true,
    );
    expect(idProblem('', 'nodeId')).to.equal('nodeId must not be empty');
    expect(idProblem('a#1', 'nodeId')).to.equal('nodeId may contain only A-Z a-z 0-9 . _ : -');
    expect(idProblem(1, 'nodeId')).to.equal('nodeId must be a string');
  });

  it("bounds a join's httpAddress: http(s)://host:port, no path, at most 256 bytes", () => {
    const join = (httpAddress: unknown) =>
      parseJoinRequest({ clusterId: 'c', kind: 'node', httpAddress });
    expect(join('http://127.0.0.1:7701').ok).to.equal(true);
    expect(join('http://[::1]:7701').ok).to.equal(true);
    expect(join(`http://${'h'.repeat(256 - 'http://:1'.length)}:1`).ok).to.equal(true);
    expect(join(`http://${'h'.repeat(256)}:1`)).to.deep.equal({
      ok: false,
      reason: 'httpAddress is longer than 256 bytes',
    });
    expect(join('http://127.0.0.1:7701/kv').ok).to.equal(false);
    expect(join('ftp://127.0.0.1:21').ok).to.equal(false);
    expect(join(7701).ok).to.equal(false);
  });

  it('parses a join and refuses unknown fields, bad kinds, a secret without its id', () => {
    const join = { clusterId: 'c', kind: 'browser' };
    expect(parseJoinRequest(join)).to.deep.equal({ ok: true, value: join });
    expect(parseJoinRequest({ ...join, admin: true })).to.deep.equal({
      ok: false,
      reason: "join has an unknown field 'admin'",
    });
    // Version 1 sent the token in the join; it belongs to the handshake now.
    expect(parseJoinRequest({ ...join, token: 't' }).ok).to.equal(false);
    expect(parseJoinRequest({ ...join, kind: 'phone' }).ok).to.equal(false);
    expect(parseJoinRequest(Object.create({ inherited: 1 })).ok).to.equal(false);
    const reclaim = { ...join, nodeId: 'a', memberSecret: 'f'.repeat(64) };
    expect(parseJoinRequest(reclaim).ok).to.equal(true);
    expect(parseJoinRequest({ ...join, memberSecret: 'f'.repeat(64) })).to.deep.equal({
      ok: false,
      reason: 'memberSecret goes with the nodeId it was issued for',
    });
    expect(parseJoinRequest({ ...reclaim, memberSecret: 'f'.repeat(65) }).ok).to.equal(false);
  });

  it('parses a handshake auth and refuses long tokens', () => {
    const auth = { protocolVersion: PROTOCOL_VERSION, clusterId: 'c', token: 't' };
    expect(parseHandshakeAuth(auth)).to.deep.equal({ ok: true, value: auth });
    expect(parseHandshakeAuth({ ...auth, token: 'é'.repeat(600) }).ok).to.equal(false);
    expect(parseHandshakeAuth({ ...auth, nodeId: 'a' }).ok).to.equal(false);
    expect(parseHandshakeAuth({ ...auth, protocolVersion: '2' }).ok).to.equal(false);
  });

  it('accepts only plain JSON objects as signal payloads', () => {
    const signal = { clusterId: 'c', to: 'b', payload: { candidate: { sdpMid: '0' } } };
    expect(parseSignalRequest(signal).ok).to.equal(true);
    for (const payload of [null, [1], 'offer', { n: Number.NaN }, { d: new Date(0) }]) {
      expect(parseSignalRequest({ ...signal, payload }).ok, String(payload)).to.equal(false);
    }
  });

  it('checks settings with the ring’s bounds', () => {
    expect(settingsProblem(settings)).to.equal(undefined);
    expect(settingsProblem({ ...settings, partitions: 3 })).to.contain('power of two');
    expect(settingsProblem({ ...settings, clusterId: '' })).to.equal('clusterId must not be empty');
  });

  it('parses replies: an error needs a known code', () => {
    const none = () => undefined;
    expect(parseReply({ ok: false, error: { code: 'invalid', message: 'm' } }, none).ok).to.equal(
      true,
    );
    expect(parseReply({ ok: false, error: { code: 'teapot', message: 'm' } }, none).ok).to.equal(
      false,
    );
    expect(parseReply({ ok: 'yes' }, none).ok).to.equal(false);
  });
});

describe('signaling protocol: registry deltas', () => {
  const from: RegistrySnapshot = {
    settings,
    epoch: 5,
    members: [member('a', 1), member('b', 2, 'left'), member('c', 3)],
  };
  const to: RegistrySnapshot = {
    settings,
    epoch: 6,
    members: [member('a', 1), member('c', 6, 'down'), member('d', 6)],
  };

  it('carries only what changed, and applying it gives the next registry', () => {
    const delta = registryDelta(from, to);
    expect(delta).to.deep.equal({
      clusterId: 'c',
      fromEpoch: 5,
      changed: [member('c', 6, 'down'), member('d', 6)],
      removed: ['b'],
    });
    expect(parseRegistryDelta(JSON.parse(JSON.stringify(delta)))).to.deep.equal({
      ok: true,
      value: delta,
    });
    expect(applyRegistryDelta(from, delta)).to.deep.equal({ ok: true, value: to });
  });

  it('refuses a delta for another epoch or one that breaks the invariants', () => {
    const delta = registryDelta(from, to);
    expect(applyRegistryDelta(to, delta)).to.deep.equal({
      ok: false,
      reason: 'delta from epoch 5 to a registry at epoch 6',
    });
    // A record changed "in the future" of the resulting epoch.
    const bad = { ...delta, changed: [member('e', 9)] };
    expect(applyRegistryDelta(from, bad).ok).to.equal(false);
    expect(registryProblem(to)).to.equal(undefined);
  });
});
