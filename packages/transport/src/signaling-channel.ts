import type { SignalChannel, SignalData } from './signal-channel.ts';
import type { SignalingClient } from './signaling-client.ts';
import type { SignalPayload } from './signaling-protocol.ts';

/**
 * The mesh's signal channel over the signaling server: signals go through `client`, and a
 * member whose connection to the server comes back (`presence` online: a restart, or the
 * server itself restarted) counts as back online.
 *
 * Relay failures (target offline, server down, rate limit) are counted in `failedSignals`
 * (the last one's reason in `lastFailure`) and otherwise ignored: the mesh times the
 * attempt out and retries.
 */
export class SignalingChannel implements SignalChannel {
  private failed = 0;
  private lastFailureReason: string | null = null;

  constructor(private readonly client: SignalingClient) {}

  /** Signals the server refused or could not take. */
  get failedSignals(): number {
    return this.failed;
  }

  /** Why the last refused signal was refused, and to whom (null if none was). */
  get lastFailure(): string | null {
    return this.lastFailureReason;
  }

  sendSignal(to: string, data: SignalData): void {
    // The mesh only sends JSON (ids, SDP strings, candidates); the server validates it.
    this.client.sendSignal(to, data as SignalPayload).catch((error: unknown) => {
      this.failed += 1;
      this.lastFailureReason = `to ${to}: ${error instanceof Error ? error.message : String(error)}`;
    });
  }

  onSignal(handler: (from: string, data: unknown) => void): () => void {
    return this.client.on('signal', handler);
  }

  onPeerOnline(handler: (peer: string) => void): () => void {
    return this.client.on('presence', (peer, online) => {
      if (online) handler(peer);
    });
  }
}
