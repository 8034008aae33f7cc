/** Placeholder replaced when the services land. */
export async function serveCommand(_argv: string[]): Promise<number> {
  process.stderr.write('serve: not available yet\n');
  return 1;
}
