// An in-process stand-in for RTCPeerConnection, for tests that need an RTC stack to behave
// in one exact way every run. Two instances connect when the offer and answer have crossed
// (descriptions carry the instance's number; there are no ICE candidates). Channels created
// with `negotiated: true` pair up by id on both sides and open together, a macrotask after
// the answer lands. A channel created without it is announced to the answerer in band
// (`ondatachannel`), as over DCEP, and models node-datachannel 0.33.4 (libdatachannel):
// the offerer's side opens and may send before the answerer's page has the announced channel
// in hand; messages that arrived meanwhile are handed to the page by two threads at once (the
// page's own, registering its message callback, and the SCTP thread delivering the next
// message), so they need not come out in the order sent. The fake announces a channel a
// macrotask after its first message arrived and swaps the second and third messages that
// arrived by then, every time. (On the real stack: 8 of 150 connections whose offerer sent
// 2 000 messages of 256 bytes at once delivered some out of order; with negotiated
// channels, 0 of 150.)

type Handler = ((event: unknown) => void) | null;

const connections = new Map<number, FakeRtcPeerConnection>();
let nextConnectionNumber = 1;

/** Runs `action` a macrotask later, as a stack's event would. */
function later(action: () => void): void {
  setTimeout(action, 0);
}

export class FakeRtcDataChannel {
  readyState: RTCDataChannelState = 'connecting';
  binaryType: BinaryType = 'arraybuffer';
  readonly bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  onopen: Handler = null;
  onmessage: Handler = null;
  onclose: Handler = null;
  onerror: Handler = null;
  /** The other side's channel once the connection pairs them. */
  remote: FakeRtcDataChannel | undefined;
  /** Messages that arrived before the page had this (announced) channel, in arrival order. */
  private early: ArrayBuffer[] | undefined;
  private announce: ((channel: FakeRtcDataChannel) => void) | undefined;

  constructor(
    readonly label: string,
    readonly init: RTCDataChannelInit,
  ) {}

  send(data: Uint8Array): void {
    if (this.readyState !== 'open' || this.remote === undefined) {
      throw new Error('data channel not open');
    }
    const copy = data.slice().buffer;
    const remote = this.remote;
    later(() => remote.receive(copy));
  }

  close(): void {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    const remote = this.remote;
    if (remote !== undefined && remote.readyState !== 'closed') {
      later(() => {
        if (remote.readyState === 'closed') return;
        remote.readyState = 'closed';
        remote.onclose?.({});
      });
    }
  }

  addEventListener(): void {
    // bufferedAmount is always 0 here: the mesh never waits for a drain.
  }

  removeEventListener(): void {}

  /**
   * The answerer's side of an announced channel: open, its page not told yet. The page
   * hears of it (`announce`) a macrotask after its first message arrived, so that the
   * messages sent with that one arrive first.
   */
  openUnannounced(announce: (channel: FakeRtcDataChannel) => void): void {
    this.readyState = 'open';
    this.early = [];
    this.announce = announce;
  }

  open(): void {
    if (this.readyState !== 'connecting') return;
    this.readyState = 'open';
    this.onopen?.({});
  }

  private receive(message: ArrayBuffer): void {
    if (this.readyState !== 'open') return;
    const early = this.early;
    if (early === undefined) {
      this.deliver(message);
      return;
    }
    early.push(message);
    if (early.length > 1) return;
    later(() => {
      this.early = undefined;
      this.announce?.(this);
      // Two threads hand out what arrived meanwhile: the 2nd and 3rd come out swapped.
      if (early.length >= 3) [early[1], early[2]] = [early[2]!, early[1]!];
      for (const queued of early) this.deliver(queued);
    });
  }

  private deliver(message: ArrayBuffer): void {
    if (this.readyState === 'open') this.onmessage?.({ data: message });
  }
}

export class FakeRtcPeerConnection {
  connectionState: RTCPeerConnectionState = 'new';
  onicecandidate: Handler = null;
  onconnectionstatechange: Handler = null;
  ondatachannel: Handler = null;
  private readonly number = nextConnectionNumber++;
  private readonly channels: FakeRtcDataChannel[] = [];

  constructor() {
    connections.set(this.number, this);
  }

  createDataChannel(label: string, init: RTCDataChannelInit = {}): FakeRtcDataChannel {
    const channel = new FakeRtcDataChannel(label, init);
    this.channels.push(channel);
    return channel;
  }

  async createOffer(): Promise<RTCSessionDescriptionInit> {
    return { type: 'offer', sdp: `fake ${this.number}` };
  }

  async createAnswer(): Promise<RTCSessionDescriptionInit> {
    return { type: 'answer', sdp: `fake ${this.number}` };
  }

  async setLocalDescription(): Promise<void> {}

  async setRemoteDescription(description: RTCSessionDescriptionInit): Promise<void> {
    const remote = connections.get(Number(description.sdp?.split(' ')[1]));
    if (remote === undefined) throw new Error('unknown fake connection');
    if (description.type === 'answer') later(() => this.connect(remote));
  }

  async addIceCandidate(): Promise<void> {}

  async getStats(): Promise<Map<string, unknown>> {
    return new Map();
  }

  close(): void {
    connections.delete(this.number);
    for (const channel of this.channels) channel.close();
    this.connectionState = 'closed';
  }

  /** The offer and the answer crossed: channels pair up and open. */
  private connect(answerer: FakeRtcPeerConnection): void {
    if (this.connectionState === 'closed' || answerer.connectionState === 'closed') return;
    this.connectionState = 'connected';
    answerer.connectionState = 'connected';
    for (const channel of this.channels) {
      const id = channel.init.id;
      const remote = channel.init.negotiated
        ? answerer.channels.find((other) => other.init.negotiated && other.init.id === id)
        : answerer.createDataChannel(channel.label, channel.init);
      if (remote === undefined) continue;
      channel.remote = remote;
      remote.remote = channel;
      if (channel.init.negotiated) {
        channel.open();
        remote.open();
      } else {
        // DCEP: the offerer's side opens on the ACK; the page hears of the channel later.
        remote.openUnannounced((announced) => answerer.ondatachannel?.({ channel: announced }));
        channel.open();
      }
    }
  }
}
