// The router's origin side against a host of its own: which answers end a request, which
// are retried. (Scenario tests in mesh-node.test.ts drive it inside real MeshNodes.)
import { expect } from 'chai';
import { ErrorCode, type MeshKvError } from '../src/errors.ts';
import type { GroupReplica } from '../src/group.ts';
import { type Outcome, Router, type RouterHost } from '../src/router.ts';
import type { RequestRecord, ResponseRecord, WireErrorCode } from '../src/wire.ts';

const SETTINGS = {
  maxPendingRequests: 16,
  maxServedRequests: 16,
  retryMinMs: 100,
  retryMaxMs: 100,
};

/** A node without replicas whose links are all up; it records what the router sends. */
class Host implements RouterHost {
  readonly nodeId = 'origin';
  clockMs = 0;
  readonly sent: { to: string; request: RequestRecord }[] = [];
  readonly replicas = ['x', 'y', 'z'];
  /** The replica of the partition here, if a test gives it one. */
  ownReplica: GroupReplica | undefined = undefined;
  nowMs(): number {
    return this.clockMs;
  }
  replica(): GroupReplica | undefined {
    return this.ownReplica;
  }
  placementReplicas(): readonly string[] {
    return this.replicas;
  }
  linkUp(): boolean {
    return true;
  }
  sendRequest(to: string, request: RequestRecord): void {
    this.sent.push({ to, request });
  }
  sendResponse(): void {}
  touch(): void {}
}

function setup() {
  const host = new Host();
  const router = new Router(host, SETTINGS, 'client-1', 1);
  /** The router's tick `ms` from now (retries and deadlines happen on ticks). */
  const tick = (ms: number) => {
    host.clockMs += ms;
    router.onTick();
  };
  /** An error answer from the target of the last request sent. */
  const answerError = (code: WireErrorCode, message = 'no', leaderHint: string | null = null) => {
    const last = host.sent.at(-1)!;
    const response: ResponseRecord = {
      kind: 'response',
      requestId: last.request.requestId,
      outcome: 'error',
      code,
      message,
      leaderHint,
    };
    router.onResponse(last.to, response);
  };
  /** A value answer from `from` to the `sent`-th request sent (from 0). */
  const answerValue = (from: string, sent: number, value: Uint8Array) => {
    router.onResponse(from, {
      kind: 'response',
      requestId: host.sent[sent]!.request.requestId,
      outcome: 'value',
      value,
    });
  };
  return { host, router, tick, answerError, answerValue };
}

/** What the request settled with, or 'pending'. */
function settled(promise: Promise<Outcome>): () => string {
  let state = 'pending';
  promise.then(
    (outcome) => {
      state = `resolved ${JSON.stringify(outcome.value)}`;
    },
    (error: MeshKvError) => {
      state = `${error.code}${error.details.mayHaveApplied === true ? ' (may have applied)' : ''}`;
    },
  );
  return () => state;
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('router: which answers end a request', () => {
  it('OVERLOADED at the first attempt fails the write at once: nothing was done', async () => {
    const { router, answerError } = setup();
    const put = settled(router.request('put', 0, 'k', new Uint8Array([1]), 1_000, false));
    answerError(ErrorCode.OVERLOADED);
    await flush();
    expect(put()).to.equal(ErrorCode.OVERLOADED);
  });

  it('OVERLOADED after an earlier attempt may have proposed the write is retried, not "nothing done"', async () => {
    const { host, router, tick, answerError } = setup();
    const put = settled(router.request('put', 0, 'k', new Uint8Array([1]), 1_000, false));
    tick(100); // No answer from the first replica: the next one is tried.
    expect(host.sent).to.have.length(2);
    answerError(ErrorCode.OVERLOADED);
    await flush();
    expect(put()).to.equal('pending');
    tick(100);
    expect(host.sent).to.have.length(3); // Tried again with the same session seq.
    expect(host.sent[2]!.request.seq).to.equal(host.sent[0]!.request.seq);
    tick(1_000);
    await flush();
    expect(put()).to.equal(`${ErrorCode.TIMEOUT} (may have applied)`);
  });

  it('CLOSED from a target that is closing is retried elsewhere; a result from any attempt ends the request', async () => {
    const { host, router, tick, answerError, answerValue } = setup();
    const get = settled(router.request('get', 0, 'k', null, 1_000, false));
    answerError(ErrorCode.CLOSED, 'node x is closing');
    await flush();
    expect(get()).to.equal('pending');
    tick(100);
    tick(100);
    expect(host.sent.map((s) => s.to)).to.deep.equal(['x', 'y', 'z']);
    // The first attempt's answer arrives last: it still answers the request.
    answerValue('x', 0, new Uint8Array([7]));
    await flush();
    expect(get()).to.equal('resolved {"0":7}');
  });

  it('an error from an earlier attempt is ignored: only the current target speaks for the retry', async () => {
    const { host, router, tick } = setup();
    const put = settled(router.request('put', 0, 'k', new Uint8Array([1]), 1_000, false));
    tick(100);
    router.onResponse('x', {
      kind: 'response',
      requestId: host.sent[0]!.request.requestId,
      outcome: 'error',
      code: ErrorCode.OVERLOADED,
      message: 'stale',
      leaderHint: null,
    });
    await flush();
    expect(put()).to.equal('pending');
  });
});

describe('router: following leader hints', () => {
  /** A follower replica here that believes `leaderNode` leads (a stale one, in these tests). */
  const followerOf = (leaderNode: string): GroupReplica =>
    ({
      initialized: true,
      quiesced: false,
      raw: { lead: `${leaderNode}@1`, role: 'follower' },
    }) as unknown as GroupReplica;

  it('a hint is followed even when a replica here believes another leads (one that missed its removal)', async () => {
    const { host, router, answerError, answerValue } = setup();
    host.ownReplica = followerOf('x');
    const get = settled(router.request('get', 0, 'k', null, 1_000, false));
    expect(host.sent.map((s) => s.to)).to.deep.equal(['x']);
    answerError('NOT_LEADER', 'x does not lead', 'z');
    expect(host.sent.map((s) => s.to)).to.deep.equal(['x', 'z']);
    answerValue('z', 1, new Uint8Array([7]));
    await flush();
    expect(get()).to.equal('resolved {"0":7}');
  });

  it('replicas that name each other bounce a request a bounded number of times per backoff round', async () => {
    const { host, router, tick, answerError } = setup();
    const get = settled(router.request('get', 0, 'k', null, 1_000, false));
    for (let i = 0; i < 20; i++)
      answerError('NOT_LEADER', 'no', host.sent.at(-1)!.to === 'x' ? 'y' : 'x');
    const bounced = host.sent.length;
    expect(bounced).to.be.within(2, 6);
    // The backoff's retry goes where the last answer pointed, and may bounce again.
    tick(100);
    expect(host.sent).to.have.length(bounced + 1);
    expect(host.sent.at(-1)!.to).to.equal(host.sent.at(-2)!.to === 'x' ? 'y' : 'x');
    await flush();
    expect(get()).to.equal('pending');
  });
});
