import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = path.resolve(__dirname, '..', '..', '..');
const buf = path.join(root, 'node_modules', '.bin', 'buf');
/**
 * The last released contract, an image committed beside the sources (npm run proto:release writes it when a
 * release is cut): what clients built against it must keep working with.
 */
const RELEASED = 'proto/released.binpb';

describe('proto contract', () => {
  it('passes buf lint (STANDARD)', async () => {
    await run(buf, ['lint'], { cwd: root });
  });

  it(`has no breaking change against the released contract, ${RELEASED} (buf breaking, FILE)`, async () => {
    await run(buf, ['breaking', '--against', RELEASED], { cwd: root });
  });

  it('the breaking check fails on a breaking change (a field renumbered in a copy of proto/)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'moeflash-buf-'));
    try {
      await cp(path.join(root, 'proto'), path.join(dir, 'proto'), { recursive: true });
      await cp(path.join(root, 'buf.yaml'), path.join(dir, 'buf.yaml'));
      const file = path.join(dir, 'proto', 'moeflash', 'v1', 'generation.proto');
      const source = await readFile(file, 'utf8');
      const broken = source.replace('uint32 max_tokens = 4;', 'uint32 max_tokens = 99;');
      assert.notEqual(broken, source);
      await writeFile(file, broken);
      await assert.rejects(run(buf, ['breaking', '--against', path.join(root, RELEASED)], { cwd: dir }), (err: { stdout?: string }) => {
        assert.match(err.stdout ?? '', /max_tokens/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('documents every service, rpc, message, field and enum value', async () => {
    const { stdout } = await run(buf, ['build', '-o', '-#format=json', '--path', 'proto/moeflash'], { cwd: root, maxBuffer: 64 << 20 });
    const set = JSON.parse(stdout) as { file: { name: string; sourceCodeInfo?: { location: { path?: number[]; leadingComments?: string }[] } }[] };
    const undocumented: string[] = [];
    for (const file of set.file.filter((f) => f.name.startsWith('moeflash/'))) {
      const locations = file.sourceCodeInfo?.location ?? [];
      const commented = new Set(locations.filter((l) => l.leadingComments?.trim()).map((l) => (l.path ?? []).join('.')));
      // Paths of declarations: messages (4.i), fields (4.i.2.j), enums (5.i), values (5.i.2.j), services (6.i), rpcs (6.i.2.j);
      // a oneof (4.i.8.j) too.
      for (const l of locations) {
        const p = (l.path ?? []).join('.');
        if (/^(4\.\d+(\.(2|8)\.\d+)?|5\.\d+(\.2\.\d+)?|6\.\d+(\.2\.\d+)?)$/.test(p) && !commented.has(p)) undocumented.push(`${file.name}:${p}`);
      }
    }
    assert.deepEqual(undocumented, []);
  });
});
