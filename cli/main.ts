/** `moeflash <command>`: dispatches to one module per command. */
import { MoeflashError } from '../services/common/errors';

type Command = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, { describe: string; load: () => Promise<Command> }> = {
  generate: { describe: 'generate text in-process (no services)', load: async () => (await import('./commands/generate')).generateCommand },
  'make-model': { describe: 'write a random-weight MoE GGUF', load: async () => (await import('./commands/makeModel')).makeModelCommand },
  client: { describe: 'call a running router (client generate|models)', load: async () => (await import('./commands/client')).clientCommand },
  heatmap: { describe: 'render the expert-store heat map as SVG', load: async () => (await import('./commands/heatmap')).heatmapCommand },
  'trace-summary': { describe: 'per-layer expert statistics of a recent request (inference ring)', load: async () => (await import('./commands/traceSummary')).traceSummaryCommand },
  'cpu-build': { describe: 'the engine\'s CPU build here: select (install), probe, show', load: async () => (await import('./commands/cpuBuild')).cpuBuildCommand },
  serve: { describe: 'start expert-store, inference and router (what npm start runs)', load: async () => (await import('./commands/serve')).serveCommand },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.describe}`);
  return `usage: moeflash <command> [options]\n\ncommands:\n${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  const command = name ? COMMANDS[name] : undefined;
  if (!command) {
    process.stderr.write(name && name !== '--help' ? `moeflash: unknown command '${name}'\n\n${usage()}` : usage());
    process.exitCode = name && name !== '--help' ? 2 : 0;
    return;
  }
  try {
    process.exitCode = await (await command.load())(rest);
  } catch (e) {
    // typed errors are the user's to fix: print their message; anything else is a bug: show the stack
    const message = e instanceof MoeflashError || (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
      ? (e as Error).message
      : ((e as Error).stack ?? String(e));
    process.stderr.write(`moeflash ${name}: ${message}\n`);
    process.exitCode = e instanceof MoeflashError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1;
  }
}
