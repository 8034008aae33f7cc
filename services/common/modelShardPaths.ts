const SHARD_PATTERN = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/;

/** The files of a model: the shards of a split GGUF (`name-00001-of-00003.gguf`, any one of them given), or the file. */
export function modelShardPaths(path: string): string[] {
  const m = SHARD_PATTERN.exec(path);
  if (!m) return [path];
  const count = Number(m[3]);
  if (count < 1) return [path];
  const pad = (n: number) => String(n).padStart(5, '0');
  return Array.from({ length: count }, (_, i) => `${m[1]}-${pad(i + 1)}-of-${m[3]}.gguf`);
}
