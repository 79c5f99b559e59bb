/**
 * One WebRTC connection carrying two data channels: `meshkv`, ordered and reliable, for the
 * frames, and `meshkv-control`, unordered and without retransmissions, for heartbeats (so
 * they never wait behind bulk data in the ordered stream, and a lost one is replaced by the
 * next). The offer/answer and trickled ICE candidates go over the standard
 * RTCPeerConnection API; nothing else.
 *
 * Both channels are negotiated out of band (`negotiated: true`, fixed ids), created by both
 * sides before any signal, never announced in band (DCEP, `ondatachannel`): node-datachannel
 * (libdatachannel) hands the first messages of an announced channel to the page from two
 * threads at once when they arrive before the page has the channel (its message callback
 * is registered then, and flushes what is queued while the SCTP thread delivers the next
 * message), and now and then delivers them out of order. The ordered frame stream then
 * lost continuity: a 64 KiB frame's second chunk came before its first, and every chunk
 * after was refused (one Node↔Node echo ended at 1 frame received, 66 malformed; a probe
 * with 2 000 small messages sent at open saw it on 8 of 150 announced channels, 0 of 150
 * negotiated ones). A negotiated channel has its callback before the connection exists.
 *
 * Why not simple-peer: @thaunknown/simple-peer (the maintained fork) pulls CommonJS
 * modules (streamx, debug, err-code, and Node's `events` through events-universal) that a
 * browser loads only through a bundler with Node polyfills (web-test-runner could not), and
 * its Node backend (webrtc-polyfill) pins node-datachannel ^0.32, which has no prebuilt
 * binary in the registry. The mesh needs a single data channel, which is this file.
 *
 * Contract: `onSignal` carries JSON objects for the other side's `signal()`, in order.
 * `onOpen` fires once when the frame channel opens; `message` carries what arrived on it,
 * `control` what arrived on the control channel (which may open later, or never on a stack
 * that refuses it: `sendControl` then uses the frame channel). `onClose` fires at most once,
 * when the connection or the frame channel fails or closes, never after `destroy()`. No
 * callback throws into the RTC stack: negotiation errors become `onClose(reason)`.
 */

/** The RTCPeerConnection constructor to use: the browser's, or node-datachannel's polyfill. */
export type RtcPeerConnectionClass = new (configuration?: RTCConfiguration) => RTCPeerConnection;

export interface RtcPeerCallbacks {
  signal(data: { readonly [key: string]: unknown }): void;
  open(): void;
  message(data: Uint8Array): void;
  control(data: Uint8Array): void;
  close(reason: string): void;
}

const CHANNEL_LABEL = 'meshkv';
const CONTROL_CHANNEL_LABEL = 'meshkv-control';
/** SCTP stream ids of the negotiated channels: the same on both sides. */
const CHANNEL_ID = 0;
const CONTROL_CHANNEL_ID = 1;

export class RtcPeer {
  private readonly pc: RTCPeerConnection;
  private readonly channel: RTCDataChannel;
  private readonly controlChannel: RTCDataChannel;
  /** Negotiation steps run one after another, in signal order. */
  private steps: Promise<void> = Promise.resolve();
  private pendingCandidates: RTCIceCandidateInit[] = [];
  private remoteDescriptionSet = false;
  private finished = false;
  /** ICE candidates sent to the other side, and received from it (for `describe`). */
  private localCandidates = 0;
  private remoteCandidates = 0;
  /** The first few of them as `address port protocol type` (for `describe`). */
  private readonly localCandidateNames: string[] = [];
  private readonly remoteCandidateNames: string[] = [];

  constructor(
    PeerConnection: RtcPeerConnectionClass,
    configuration: RTCConfiguration,
    readonly initiator: boolean,
    private readonly callbacks: RtcPeerCallbacks,
  ) {
    this.pc = new PeerConnection(configuration);
    this.pc.onicecandidate = (event) => {
      const candidate = event.candidate;
      if (candidate === null || candidate.candidate === '' || this.finished) return;
      this.localCandidates += 1;
      noteCandidate(this.localCandidateNames, candidate.candidate);
      this.callbacks.signal({
        candidate: {
          candidate: candidate.candidate,
          sdpMid: candidate.sdpMid,
          sdpMLineIndex: candidate.sdpMLineIndex,
        },
      });
    };
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      // A failed one says how far it got (the candidates each way): an ICE failure between
      // two members that reach everyone else is otherwise a bare "connection failed".
      if (state === 'failed') this.finish(`connection failed (${this.describe()})`);
      else if (state === 'closed') this.finish('connection closed');
    };
    this.channel = this.pc.createDataChannel(CHANNEL_LABEL, {
      ordered: true,
      negotiated: true,
      id: CHANNEL_ID,
    });
    this.setUpChannel(this.channel);
    this.controlChannel = this.pc.createDataChannel(CONTROL_CHANNEL_LABEL, {
      ordered: false,
      maxRetransmits: 0,
      negotiated: true,
      id: CONTROL_CHANNEL_ID,
    });
    this.setUpControlChannel(this.controlChannel);
    if (initiator) {
      this.step(async () => {
        const offer = await this.pc.createOffer();
        await this.pc.setLocalDescription(offer);
        this.callbacks.signal({ type: 'offer', sdp: offer.sdp ?? '' });
      });
    }
  }

  /**
   * Bytes the connection received so far (its ICE candidate pairs, as counted by the RTC
   * stack's own threads, whatever our event loop is doing), or undefined if the stack does
   * not say.
   */
  async bytesReceived(): Promise<number | undefined> {
    try {
      let bytes: number | undefined;
      for (const report of (await this.pc.getStats()).values()) {
        const received = (report as { type?: string; bytesReceived?: unknown }).bytesReceived;
        if (report.type === 'candidate-pair' && typeof received === 'number') {
          bytes = (bytes ?? 0) + received;
        }
      }
      return bytes;
    } catch {
      return undefined;
    }
  }

  /**
   * Where the negotiation stands, for a failure message: the connection's signaling, ICE
   * and connection states, whether the remote description is set, candidates each way, and
   * the frame channel's state (e.g. "signaling stable, ice checking, connection connecting,
   * remote description set, candidates 2 sent / 0 received, channel connecting"), then the
   * first candidates each way (e.g. "sent [127.0.0.1 50000 udp host], received []").
   */
  describe(): string {
    const pc = this.pc;
    return [
      `signaling ${pc.signalingState}`,
      `ice ${pc.iceConnectionState}`,
      `connection ${pc.connectionState}`,
      `remote description ${this.remoteDescriptionSet ? 'set' : 'not set'}`,
      `candidates ${this.localCandidates} sent / ${this.remoteCandidates} received`,
      `channel ${this.channel.readyState}`,
      `sent [${this.localCandidateNames.join('; ')}]`,
      `received [${this.remoteCandidateNames.join('; ')}]`,
    ].join(', ');
  }

  /** Bytes handed to the channel and not yet sent. */
  get bufferedAmount(): number {
    return this.channel.bufferedAmount;
  }

  /** The frame channel (for `bufferedamountlow`). */
  get dataChannel(): RTCDataChannel {
    return this.channel;
  }

  /** Applies a signal from the other side; a malformed one fails the connection. */
  signal(data: { readonly [key: string]: unknown }): void {
    const { type, sdp, candidate } = data;
    if ((type === 'offer' || type === 'answer') && typeof sdp === 'string') {
      if ((type === 'offer') === this.initiator) {
        this.finish(`unexpected ${type}`);
        return;
      }
      this.step(async () => {
        await this.pc.setRemoteDescription({ type, sdp });
        this.remoteDescriptionSet = true;
        for (const pending of this.pendingCandidates) await this.pc.addIceCandidate(pending);
        this.pendingCandidates = [];
        if (type === 'offer') {
          const answer = await this.pc.createAnswer();
          await this.pc.setLocalDescription(answer);
          this.callbacks.signal({ type: 'answer', sdp: answer.sdp ?? '' });
        }
      });
    } else if (isCandidate(candidate)) {
      this.remoteCandidates += 1;
      noteCandidate(this.remoteCandidateNames, candidate.candidate ?? '');
      this.step(async () => {
        if (this.remoteDescriptionSet) await this.pc.addIceCandidate(candidate);
        else this.pendingCandidates.push(candidate);
      });
    } else {
      this.finish('malformed signal');
    }
  }

  /** Sends one message; throws if the channel is not open (the caller fails the link). */
  send(message: Uint8Array): void {
    if (this.channel.readyState !== 'open') {
      throw new Error('data channel not open');
    }
    // Our messages are built on plain ArrayBuffers (wire.ts), never shared memory.
    this.channel.send(message as Uint8Array<ArrayBuffer>);
  }

  /**
   * Sends one control message on the control channel, or on the frame channel while the
   * control channel is not open; throws if neither is (the caller fails the link).
   */
  sendControl(message: Uint8Array): void {
    const control = this.controlChannel;
    if (control.readyState === 'open') {
      try {
        control.send(message as Uint8Array<ArrayBuffer>);
        return;
      } catch {
        // Closing under us: the frame channel still carries control messages.
      }
    }
    this.send(message);
  }

  /** Closes everything; no callback fires afterwards. Idempotent. */
  destroy(): void {
    this.finished = true;
    try {
      this.controlChannel.close();
      this.channel.close();
      this.pc.close();
    } catch {
      // Closing a connection that already failed may throw in some stacks; it is closed.
    }
  }

  private setUpChannel(channel: RTCDataChannel): void {
    channel.binaryType = 'arraybuffer';
    channel.onopen = () => {
      if (!this.finished) this.callbacks.open();
    };
    channel.onmessage = (event: MessageEvent) => {
      if (!this.finished) this.callbacks.message(bytesOf(event.data));
    };
    channel.onclose = () => this.finish('channel closed');
    channel.onerror = (event) => {
      const error = (event as RTCErrorEvent).error;
      this.finish(`channel error: ${error?.message ?? 'unknown'}`);
    };
  }

  /** The control channel only carries liveness: its failure alone does not end the link. */
  private setUpControlChannel(channel: RTCDataChannel): void {
    channel.binaryType = 'arraybuffer';
    channel.onmessage = (event: MessageEvent) => {
      if (!this.finished) this.callbacks.control(bytesOf(event.data));
    };
  }

  private step(action: () => Promise<void>): void {
    this.steps = this.steps.then(async () => {
      if (this.finished) return;
      try {
        await action();
      } catch (error) {
        this.finish(`negotiation failed: ${error instanceof Error ? error.message : error}`);
      }
    });
  }

  private finish(reason: string): void {
    if (this.finished) return;
    this.destroy();
    this.callbacks.close(reason);
  }
}

/** A message's bytes; a text message becomes an empty array, which is malformed for us. */
function bytesOf(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data))
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(0);
}

/** Candidates named per side in `describe`: enough to see which addresses ICE paired. */
const MAX_CANDIDATE_NAMES = 4;

/**
 * Keeps `address port protocol type` of an SDP candidate line (RFC 8839 §5.1:
 * `candidate:<foundation> <component> <protocol> <priority> <address> <port> typ <type>`).
 */
function noteCandidate(names: string[], line: string): void {
  if (names.length >= MAX_CANDIDATE_NAMES) return;
  const fields = line.replace(/^a=/, '').split(' ');
  names.push(`${fields[4] ?? '?'} ${fields[5] ?? '?'} ${fields[2] ?? '?'} ${fields[7] ?? '?'}`);
}

function isCandidate(value: unknown): value is RTCIceCandidateInit {
  if (typeof value !== 'object' || value === null) return false;
  const { candidate, sdpMid, sdpMLineIndex } = value as { [key: string]: unknown };
  return (
    typeof candidate === 'string' &&
    (sdpMid === null || sdpMid === undefined || typeof sdpMid === 'string') &&
    (sdpMLineIndex === null || sdpMLineIndex === undefined || typeof sdpMLineIndex === 'number')
  );
}
