import { readFileSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, type FieldViolation } from '../common/errors';
import type { InferenceConfig } from '../common/parseConfig';
import { LOAD_OPTIONS } from '../common/options/loadOptionTable';
import { loadOptionValue } from '../common/options/optionTable';
import type { LoadOptions } from '../engine/types';

/** A model to host: the name requests use and how to load it. */
export interface ModelSpec {
  name: string;
  options: LoadOptions;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * The models an inference process hosts: MOEFLASH_MODEL's file (named after it: `dir/qwen3-30b-a3b.gguf` ->
 * `qwen3-30b-a3b`, split suffix `-00001-of-00003` dropped) and every entry of the MOEFLASH_MODELS file,
 * `{ "<name>": { "path": "<gguf>", "options": { <LoadOptions but path> } } }`, relative paths resolved against the
 * file's directory. The engine validates the options when it loads. The engine options of the flags and
 * environment (the option table's, MOEFLASH_EXPERT_CACHE_* among them) apply to MOEFLASH_MODEL's model; a models
 * file sets the same options per model in `options`.
 */
export function resolveModelSpecs(config: Omit<InferenceConfig, 'stateDir'>, readFile: (file: string) => string = (f) => readFileSync(f, 'utf8')): ModelSpec[] {
  const specs: ModelSpec[] = [];
  const violations: FieldViolation[] = [];
  const defaults = config.modelOptions ?? {};
  if (config.model) {
    specs.push({ name: modelName(config.model), options: { ...defaults, path: config.model } });
  } else {
    // Named by the first variable given, so the message points at what to move into the models file.
    const given = LOAD_OPTIONS.find((o) => loadOptionValue(defaults, o.key) !== undefined);
    if (given)
      violations.push({
        field: given.env,
        description: `the engine option variables configure the MOEFLASH_MODEL model, and none is set: give models of MOEFLASH_MODELS options.${given.key} instead`,
      });
  }
  if (config.modelsFile) specs.push(...readModelsFile(config.modelsFile, readFile, violations));
  if (specs.length === 0) violations.push({ field: 'MOEFLASH_MODEL', description: 'no model configured: set MOEFLASH_MODEL or MOEFLASH_MODELS' });
  const seen = new Set<string>();
  for (const spec of specs) {
    if (!NAME.test(spec.name)) violations.push({ field: `models.${spec.name}`, description: 'a model name is letters, digits, ".", "_" and "-" (at most 128)' });
    if (seen.has(spec.name)) violations.push({ field: `models.${spec.name}`, description: 'configured twice' });
    seen.add(spec.name);
  }
  if (violations.length > 0) throw new InvalidArgumentError(violations);
  return specs;
}

/** The name a GGUF file is served under. */
function modelName(file: string): string {
  return path.basename(file).replace(/\.gguf$/i, '').replace(/-\d{5}-of-\d{5}$/, '');
}

function readModelsFile(file: string, readFile: (file: string) => string, violations: FieldViolation[]): ModelSpec[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFile(file));
  } catch (err) {
    violations.push({ field: 'MOEFLASH_MODELS', description: `cannot read ${file}: ${(err as Error).message}` });
    return [];
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    violations.push({ field: 'MOEFLASH_MODELS', description: `${file} must hold a JSON object of model name -> { path, options }` });
    return [];
  }
  const specs: ModelSpec[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    const e = entry as { path?: unknown; options?: unknown };
    if (typeof e !== 'object' || e === null || typeof e.path !== 'string' || e.path.length === 0) {
      violations.push({ field: `models.${name}.path`, description: 'a GGUF path is required' });
      continue;
    }
    if (e.options !== undefined && (typeof e.options !== 'object' || e.options === null || Array.isArray(e.options))) {
      violations.push({ field: `models.${name}.options`, description: 'must be an object of load options' });
      continue;
    }
    const options = { ...(e.options as Partial<LoadOptions> | undefined), path: path.resolve(path.dirname(file), e.path) };
    specs.push({ name, options });
  }
  return specs;
}
