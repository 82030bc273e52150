// A small structured logger: one line per event, key=value fields, to stderr by default.
export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: Level, message: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function consoleLogger(
  minLevel: Level = 'info',
  write: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
): Logger {
  return {
    log(level, message, fields = {}) {
      if (ORDER[level] < ORDER[minLevel]) return;
      const kv = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(
          ([k, v]) => `${k}=${typeof v === 'string' && !/[\s"]/.test(v) ? v : JSON.stringify(v)}`,
        )
        .join(' ');
      write(`${new Date().toISOString()} ${level} ${message}${kv ? ` ${kv}` : ''}`);
    },
  };
}

export const silentLogger: Logger = { log() {} };
