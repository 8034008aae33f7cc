import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = path.resolve(__dirname, '..', '..', '..');
const buf = path.join(root, 'node_modules', '.bin', 'buf');
/** What `buf breaking` compares proto/ with; CI sets it to the target branch. */
const against = process.env.MOEFLASH_BUF_AGAINST ?? 'main';

describe('proto contract', () => {
  it('passes buf lint (STANDARD)', async () => {
    await run(buf, ['lint'], { cwd: root });
  });

  it(`has no breaking change against ${against} (buf breaking, FILE)`, async function () {
    // Until the contract is on the branch there is nothing to break.
    const hasBase = await run('git', ['cat-file', '-e', `${against}:buf.yaml`], { cwd: root }).then(
      () => true,
      () => false,
    );
    if (!hasBase) this.skip();
    await run(buf, ['breaking', '--against', `.git#branch=${against}`], { cwd: root });
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
