import { expect } from 'chai';
import { CLOSE_MESSAGE, HEARTBEAT_MESSAGE, Inbox, MIN_MESSAGE_BYTES, Outbox } from '../src/wire.ts';
import { patternFrame } from './mesh-helpers.ts';

const MAX_MESSAGE_BYTES = 1024;

/** Packs `frames` with a fresh outbox; returns the messages and completed frame sizes. */
function pack(frames: Uint8Array[], maxMessageBytes = MAX_MESSAGE_BYTES) {
  const outbox = new Outbox(maxMessageBytes);
  for (const frame of frames) outbox.push(frame);
  const messages: Uint8Array[] = [];
  const completed: number[] = [];
  for (;;) {
    const message = outbox.nextMessage((bytes) => completed.push(bytes));
    if (message === undefined) break;
    expect(message.length).to.be.at.most(maxMessageBytes);
    messages.push(message.slice()); // the outbox reuses its buffer
  }
  expect(outbox.queuedFrames).to.equal(0);
  expect(outbox.queuedBytes).to.equal(0);
  return { messages, completed };
}

function unpack(messages: Uint8Array[], inbox = new Inbox(1 << 20)): Uint8Array[] {
  const frames: Uint8Array[] = [];
  for (const message of messages) {
    const result = inbox.decode(message);
    if (!result.ok) throw new Error(result.reason);
    for (const record of result.records) if (record.kind === 'frame') frames.push(record.frame);
  }
  return frames;
}

describe('transport wire format', () => {
  it('round-trips frames of every size class, in order, packed into few messages', () => {
    const sizes = [0, 1, 2, 100, 1017, 1018, 1019, 1020, 2000, 5000, 3, 1, 0, 40_000, 7];
    const frames = sizes.map((size, i) => patternFrame(size, i));
    const { messages, completed } = pack(frames);
    expect(completed).to.deep.equal(sizes);
    expect(unpack(messages)).to.deep.equal(frames);
    const totalBytes = sizes.reduce((a, b) => a + b, 0);
    // Packing: no more messages than the payload needs plus one per chunked frame.
    expect(messages.length).to.be.at.most(Math.ceil(totalBytes / (1024 - 30)) + 4 + 1);
  });

  it('round-trips random frame sequences (seeded)', () => {
    for (let seed = 1; seed <= 20; seed++) {
      let x = seed;
      const next = () => {
        x = (x * 1103515245 + 12345) >>> 0;
        return x;
      };
      const frames = Array.from({ length: 1 + (next() % 40) }, (_, i) => {
        const big = next() % 4 === 0;
        return patternFrame(big ? next() % 9000 : next() % 300, seed * 1000 + i);
      });
      const maxMessageBytes = MIN_MESSAGE_BYTES + (next() % 2000);
      const { messages } = pack(frames, maxMessageBytes);
      expect(unpack(messages), `seed ${seed}`).to.deep.equal(frames);
    }
  });

  it('packs 1 000 small frames into a handful of messages', () => {
    const frames = Array.from({ length: 1000 }, (_, i) => patternFrame(10, i));
    const { messages } = pack(frames, 64 * 1024);
    expect(messages.length).to.equal(1);
    expect(unpack(messages)).to.deep.equal(frames);
  });

  it('decodes heartbeat and close records', () => {
    const inbox = new Inbox(1024);
    expect(inbox.decode(HEARTBEAT_MESSAGE)).to.deep.equal({
      ok: true,
      records: [{ kind: 'heartbeat' }],
    });
    expect(inbox.decode(CLOSE_MESSAGE)).to.deep.equal({ ok: true, records: [{ kind: 'close' }] });
  });

  describe('rejects malformed messages whole, never throwing', () => {
    const big = patternFrame(3000, 1);
    const chunked = pack([big]).messages;
    const cases: [string, Uint8Array[], RegExp][] = [
      ['an empty message', [new Uint8Array(0)], /empty/],
      ['another version', [new Uint8Array([9, 3])], /version/],
      ['an unknown record kind', [new Uint8Array([1, 3, 77])], /kind/],
      ['a truncated frame header', [new Uint8Array([1, 1, 0, 0])], /truncated/],
      ['a truncated frame', [new Uint8Array([1, 1, 0, 0, 0, 9, 1, 2])], /truncated/],
      ['a chunk without its first', [chunked[1]!], /sequence/],
      ['a repeated chunk', [chunked[0]!, chunked[0]!], /interrupted/],
      ['a skipped chunk', [chunked[0]!, chunked[2]!], /sequence/],
      [
        'a whole frame inside a chunked one',
        [chunked[0]!, pack([new Uint8Array(3)]).messages[0]!],
        /inside/,
      ],
    ];
    for (const [name, messages, reason] of cases) {
      it(name, () => {
        const inbox = new Inbox(1 << 20);
        const results = messages.map((message) => inbox.decode(message));
        const last = results.at(-1)!;
        expect(last.ok).to.equal(false);
        if (!last.ok) expect(last.reason).to.match(reason);
        // The reassembly in progress is abandoned: a fresh frame decodes afterwards.
        expect(inbox.reassembling).to.equal(false);
        expect(unpack(pack([big]).messages, inbox)).to.deep.equal([big]);
      });
    }

    it('a frame above maxFrameBytes, whole or chunked', () => {
      const inbox = new Inbox(100);
      const whole = inbox.decode(pack([new Uint8Array(101)]).messages[0]!);
      expect(whole.ok).to.equal(false);
      const first = inbox.decode(chunked[0]!);
      expect(first).to.deep.include({ ok: false, reason: 'frame too large' });
    });

    it('chunk lengths that do not add up to the total', () => {
      const tampered = chunked.map((message) => message.slice());
      const view = new DataView(tampered[0]!.buffer);
      view.setUint32(1 + 13, 2500); // totalLength shrinks below the sum of the chunks
      const inbox = new Inbox(1 << 20);
      const results = tampered.map((message) => inbox.decode(message));
      expect(results.some((result) => !result.ok)).to.equal(true);
      expect(results.flatMap((r) => (r.ok ? r.records : []))).to.deep.equal([]);
    });
  });
});
