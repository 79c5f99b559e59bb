import { expect } from 'chai';
import { describeFailure } from './cli.ts';
import { runSeed } from './simulation.ts';

/**
 * A fixed range of simulation seeds in `pnpm test` (`pnpm sim --seeds 2000` runs many
 * more). Sized by CPU time: ~0.1 s per seed on the development machine, nodes on the
 * storage memory backend, so ~80 s (wall time grows with the machine's load). A failing
 * seed is reported with its invariant, the end of its trace and the command that
 * replays it.
 */
const FIRST_SEED = 1;
const SEEDS = 800;

describe('Raft deterministic simulation (one group, test/sim/node.ts host)', () => {
  it(`keeps every safety invariant and linearizable reads over seeds ${FIRST_SEED}..${FIRST_SEED + SEEDS - 1}`, async function () {
    this.timeout(10 * 60 * 1000);
    const failures: string[] = [];
    let lostWrites = 0;
    let restarts = 0;
    for (let seed = FIRST_SEED; seed < FIRST_SEED + SEEDS; seed++) {
      const result = await runSeed(seed);
      if (result.failure !== null) failures.push(describeFailure(result));
      lostWrites += result.stats.lostWrites;
      restarts += result.stats.restarts;
    }
    expect(failures, failures.join('\n\n')).to.deep.equal([]);
    // The range exercises the storage backend's crash loss and the recovery path.
    expect(lostWrites, 'writes lost by crashes').to.be.greaterThan(SEEDS / 10);
    expect(restarts, 'restarts').to.be.greaterThan(SEEDS);
  });

  it('catches a deliberate bug: gets answered locally, without ReadIndex', async () => {
    const caught = await Promise.all(
      [1, 2, 3, 4, 5].map((seed) => runSeed(seed, { sabotage: 'local-reads' })),
    );
    const failed = caught.filter((result) => result.failure?.invariant === 'linearizability');
    expect(failed.length, 'seeds 1-5 with local reads').to.be.greaterThan(2);
    const report = describeFailure(failed[0]!, true);
    expect(report).to.contain('is not linearizable');
    expect(report).to.contain(`replay: pnpm sim --raft --seed ${failed[0]!.seed}`);
  });

  it('replays a seed exactly', async () => {
    const first = await runSeed(7, { fullTrace: true });
    const again = await runSeed(7, { fullTrace: true });
    expect(again.trace).to.deep.equal(first.trace);
    expect(again.stats).to.deep.equal(first.stats);
    expect(first.trace.length).to.be.greaterThan(100);
    expect((await runSeed(8, { fullTrace: true })).trace).to.not.deep.equal(first.trace);
  });
});
