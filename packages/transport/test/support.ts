// Helpers that the transport tests and the signaling server tests share; the signaling
// package imports them as `@meshkv/transport/test-support` (it depends on transport, so
// transport is the one home both can reach without a cycle). Kept apart from
// mesh-helpers.ts, which the browser peer page bundles: chai stays out of that bundle.
import { expect } from 'chai';
import { SignalingError } from '../src/signaling-client.ts';

/**
 * Resolves once `condition()` holds; rejects after `deadlineMs` naming `what` and showing
 * `state()` (counters, events: what a rare failure needs to be understood). Polls: the
 * tests wait on conditions, never on fixed sleeps, and assert no timing.
 */
export async function waitFor(
  condition: () => boolean,
  what: string,
  deadlineMs = 60_000,
  state: () => unknown = () => undefined,
): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > deadlineMs) {
      throw new Error(`timed out waiting for ${what}; state: ${JSON.stringify(state())}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The rejection of `promise`, which must reject with a SignalingError. */
export async function rejection(promise: Promise<unknown>): Promise<SignalingError> {
  try {
    await promise;
  } catch (error) {
    expect(error).to.be.instanceOf(SignalingError);
    return error as SignalingError;
  }
  throw new Error('expected a rejection');
}
