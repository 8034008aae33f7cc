/**
 * services/inference/main.js run as an unprivileged user (MOEFLASH_TEST_UID, default 65534 "nobody"), so file
 * permissions apply to it: root reads a mode-000 file. Started as root it drops to that user before anything loads;
 * started as anyone else it runs as is. MOEFLASH_SERVICE=inference names the service for telemetry.
 */
if (process.getuid?.() === 0) {
  const id = Number(process.env.MOEFLASH_TEST_UID ?? 65534);
  process.setgroups?.([]);
  process.setgid?.(id);
  process.setuid?.(id);
}
process.env.MOEFLASH_SERVICE ??= 'inference';
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('../../services/inference/main');
