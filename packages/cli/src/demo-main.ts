// `tlsproxy demo [--host 127.0.0.1] [--port-base 10000]`
import { parseArgs } from 'node:util';

type RunDemo = (opts: {
  host?: string;
  portBase?: number;
  log?: (line: string) => void;
}) => Promise<{ stop(): Promise<void>; lines: string[] }>;

export async function demoMain(argv: string[]): Promise<number> {
  let values: { host?: string; 'port-base'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string' },
        'port-base': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`tlsproxy demo: ${(err as Error).message}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write('Usage: tlsproxy demo [--host 127.0.0.1] [--port-base 10000]\n');
    return 0;
  }
  const portBase = values['port-base'] === undefined ? 10000 : Number(values['port-base']);
  if (!Number.isInteger(portBase) || portBase < 0 || portBase > 65535 - 5222) {
    process.stderr.write('tlsproxy demo: --port-base must be a number from 0 to 60313\n');
    return 2;
  }
  // Loaded on demand: the demo pulls in every dialect and its backends.
  const demoModule: string = './demo.js';
  const { runDemo } = (await import(demoModule)) as { runDemo: RunDemo };
  let demo: Awaited<ReturnType<RunDemo>>;
  try {
    demo = await runDemo({
      host: values.host ?? '127.0.0.1',
      portBase,
      log: (l: string) => process.stdout.write(`${l}\n`),
    });
  } catch (err) {
    process.stderr.write(`tlsproxy demo: ${(err as Error).message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    // A second Ctrl-C while stopping must not kill the process before it cleaned up.
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => resolve());
  });
  await demo.stop();
  return 0;
}
