/**
 * Walls between the services: a service imports services/common, its own face and generated code, never another
 * service; the router (a pure gateway) never loads the engine or the native addon; services/common depends on no
 * service. Checked on the TypeScript sources, so a new cross-service import fails here rather than in review.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

import { repoRoot } from '../../services/engine/loadAddon';

const SERVICES = ['router', 'inference', 'expert-store'];

/** The area of a repository path: 'router', 'common', 'engine', 'native', 'test', 'bench', 'harness', ... or 'other'. */
function areaOf(path: string): string {
  const [top, second] = path.split('/');
  if (top === 'services') return second;
  return ['native', 'test', 'bench', 'harness'].includes(top) ? top : 'other';
}

/** Import violations of a set of files: { file: repo path, imports: [repo path of each imported module] }. */
export function importViolations(files: { file: string; imports: { target: string; typeOnly: boolean }[] }[]): string[] {
  const out: string[] = [];
  for (const { file, imports } of files) {
    const from = areaOf(file);
    for (const { target, typeOnly } of imports) {
      const to = areaOf(target);
      if (to === from || to === 'other') continue;
      if (SERVICES.includes(from) && SERVICES.includes(to)) out.push(`${file} imports another service: ${target}`);
      if (from === 'router' && (to === 'engine' || to === 'native')) out.push(`${file}: the router loads no engine or addon: ${target}`);
      if (from === 'expert-store' && to === 'engine') out.push(`${file}: the expert-store loads no engine (its native face is the I/O addon): ${target}`);
      if (from === 'common' && (SERVICES.includes(to) || (to === 'engine' && !typeOnly))) out.push(`${file}: services/common depends on no service: ${target}`);
      // What benchmarks and tests share lives in harness/, which needs neither of them.
      if ((from === 'bench' || from === 'harness') && to === 'test') out.push(`${file}: imports a test (shared helpers live in harness/): ${target}`);
      if (from === 'harness' && to === 'bench') out.push(`${file}: harness/ depends on no benchmark: ${target}`);
    }
  }
  return out;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function importsOf(root: string, file: string): { target: string; typeOnly: boolean }[] {
  const text = readFileSync(file, 'utf8');
  const found: { target: string; typeOnly: boolean }[] = [];
  for (const m of text.matchAll(/^import\s+(type\s+)?[^'"]*?from\s+'(\.[^']+)'|require\('(\.[^']+)'\)/gm)) {
    const spec = m[2] ?? m[3];
    found.push({ target: relative(root, resolve(dirname(file), spec)), typeOnly: Boolean(m[1]) });
  }
  return found;
}

describe('import graph', () => {
  const root = repoRoot();
  const files = ['services', 'harness', 'bench'].flatMap((dir) => sources(join(root, dir))).map((f) => ({ file: relative(root, f), imports: importsOf(root, f) }));

  it('no service imports another, the router and the expert-store load no engine, services/common depends on no service, benchmarks and harness/ import no test', () => {
    assert.ok(files.length > 80, `read ${files.length} files`);
    assert.deepEqual(importViolations(files), []);
  });

  it('fails on a planted cross-service import', () => {
    const planted = [
      ...files,
      { file: 'services/router/planted.ts', imports: [{ target: 'services/inference/EngineHost', typeOnly: false }, { target: 'services/engine/Engine', typeOnly: false }] },
      { file: 'services/common/planted.ts', imports: [{ target: 'services/expert-store/ExpertStore', typeOnly: false }] },
      { file: 'bench/planted.ts', imports: [{ target: 'test/helpers/something', typeOnly: false }] },
      { file: 'services/expert-store/planted.ts', imports: [{ target: 'services/engine/loadAddon', typeOnly: false }] },
    ];
    assert.deepEqual(importViolations(planted), [
      'services/router/planted.ts imports another service: services/inference/EngineHost',
      'services/router/planted.ts: the router loads no engine or addon: services/engine/Engine',
      'services/common/planted.ts: services/common depends on no service: services/expert-store/ExpertStore',
      'bench/planted.ts: imports a test (shared helpers live in harness/): test/helpers/something',
      'services/expert-store/planted.ts: the expert-store loads no engine (its native face is the I/O addon): services/engine/loadAddon',
    ]);
  });
});
