import { basename, dirname } from 'node:path';
import { METRICS_PORTS, startTelemetry, type Telemetry, type TelemetryService } from './startTelemetry';

/**
 * Starts telemetry for the service whose main module loads this one, as that module's FIRST import (so it runs
 * before grpc-js is required). The service is the main module's folder (dist/services/<service>/main.js), or
 * MOEFLASH_SERVICE. Also usable as `node --require dist/services/common/telemetry/register.js`.
 */
function serviceOfProcess(): TelemetryService {
  const named = process.env.MOEFLASH_SERVICE ?? (process.argv[1] ? basename(dirname(process.argv[1])) : '');
  if (named in METRICS_PORTS) return named as TelemetryService;
  throw new Error(`telemetry: cannot tell which service this is ('${named}'); set MOEFLASH_SERVICE`);
}

const service = serviceOfProcess();

function start(): Telemetry {
  try {
    return startTelemetry({ service, prometheusWithoutServer: service === 'expert-store' });
  } catch (err) {
    // a bad OTEL_* / MOEFLASH_METRICS_ADDR value is a configuration error: say which, exit 2 as for other settings
    process.stderr.write(`moeflash ${service}: ${(err as Error).message}\n`);
    process.exit(2);
  }
}

export const telemetry: Telemetry = start();
