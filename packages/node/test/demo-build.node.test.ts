// When `meshkv start` builds the demo (demo-build.node.ts), on a stand-in repository whose
// "vite" is a small script that writes index.html and counts its runs: built when there is
// no build, not again while the inputs stay the same, again when a package source changes,
// a failed build reported with vite's output and the previous build kept, and two starts
// at once building it once.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { type DemoBuildResult, ensureDemoBuilt, INPUTS_FILE } from '../src/demo-build.node.ts';

const FAKE_VITE = `
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
const outDir = process.argv[process.argv.indexOf('--outDir') + 1];
appendFileSync('builds.log', 'build\\n');
if (existsSync('src/broken')) {
  console.error('src/broken: this build fails');
  process.exit(1);
}
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'index.html'), '<h1>demo</h1>');
`;

describe('demo build (demo-build.node.ts) on a stand-in repository', () => {
  let repository: string;
  const lines: string[] = [];
  const out = (line: string) => lines.push(line);
  const builds = () =>
    readFileSync(join(repository, 'demo', 'builds.log'), 'utf8').split('\n').length - 1;
  const write = (path: string, text: string) => {
    mkdirSync(join(repository, path, '..'), { recursive: true });
    writeFileSync(join(repository, path), text);
  };

  beforeEach(() => {
    repository = mkdtempSync(join(tmpdir(), 'meshkv-demo-build-'));
    write('pnpm-lock.yaml', 'lockfileVersion: 9.0\n');
    write('demo/index.html', '<!doctype html>');
    write('demo/vite.config.ts', 'export default {};');
    write('demo/package.json', '{"type": "module"}');
    write('demo/src/main.ts', 'export {};');
    write('demo/builds.log', '');
    write('demo/node_modules/vite/bin/vite.js', FAKE_VITE);
    write('packages/ring/package.json', '{}');
    write('packages/ring/src/ring.ts', 'export const v = 1;');
    lines.length = 0;
  });

  afterEach(() => rmSync(repository, { recursive: true, force: true }));

  it('builds when there is no build, not again for the same inputs, again when a source changes', async () => {
    const first = await ensureDemoBuilt(out, repository);
    expect(first).to.include({ kind: 'built', reason: 'no build yet' });
    expect(readFileSync(join(repository, 'demo/dist/index.html'), 'utf8')).to.equal(
      '<h1>demo</h1>',
    );
    const recorded = JSON.parse(readFileSync(join(repository, 'demo/dist', INPUTS_FILE), 'utf8'));
    expect(recorded.sha256).to.match(/^[0-9a-f]{64}$/);
    expect(await ensureDemoBuilt(out, repository)).to.deep.equal({ kind: 'up to date' });
    expect(builds()).to.equal(1);

    write('packages/ring/src/ring.ts', 'export const v = 2;');
    const second = await ensureDemoBuilt(out, repository);
    expect(second).to.include({
      kind: 'built',
      reason: 'its sources changed since the last build',
    });
    expect(builds()).to.equal(2);
    // A new source file is a change too.
    write('demo/src/extra.ts', 'export {};');
    expect((await ensureDemoBuilt(out, repository)).kind).to.equal('built');
    expect(builds()).to.equal(3);
    expect(lines.filter((line) => line.startsWith('demo: building'))).to.have.length(3);
  });

  it('reports a failed build with its output and keeps the previous build', async () => {
    expect((await ensureDemoBuilt(out, repository)).kind).to.equal('built');
    write('demo/src/broken', '');
    const failed = (await ensureDemoBuilt(out, repository)) as DemoBuildResult & { reason: string };
    expect(failed.kind).to.equal('failed');
    expect(failed.reason).to.include('src/broken: this build fails');
    expect(readFileSync(join(repository, 'demo/dist/index.html'), 'utf8')).to.equal(
      '<h1>demo</h1>',
    );
    // Still not the build of these inputs: the next start tries again.
    expect((await ensureDemoBuilt(out, repository)).kind).to.equal('failed');
  });

  it('says so when vite is not installed', async () => {
    rmSync(join(repository, 'demo/node_modules'), { recursive: true });
    const result = (await ensureDemoBuilt(out, repository)) as DemoBuildResult & { reason: string };
    expect(result.kind).to.equal('failed');
    expect(result.reason).to.match(/^vite is not installed .*: run pnpm install$/);
  });

  it('two starts at once build it once (the build lock)', async () => {
    const results = await Promise.all([
      ensureDemoBuilt(out, repository),
      ensureDemoBuilt(out, repository),
    ]);
    expect(results.map((r) => r.kind).sort()).to.deep.equal(['built', 'up to date']);
    expect(builds()).to.equal(1);
  });
});
