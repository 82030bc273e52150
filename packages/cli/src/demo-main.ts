// `tlsproxy demo [--host 127.0.0.1] [--port-base 10000] [--engine native|node]`
import { parseArgs } from 'node:util';

type RunDemo = (opts: {
  host?: string;
  portBase?: number;
  log?: (line: string) => void;
  engine?: 'node' | 'native';
}) => Promise<{ stop(): Promise<void>; lines: string[] }>;

export async function demoMain(argv: string[]): Promise<number> {
  let values: { host?: string; 'port-base'?: string; engine?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string' },
        'port-base': { type: 'string' },
        engine: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`tlsproxy demo: ${(err as Error).message}\n`);
    return 2;
  }
  // Loaded on demand: the demo pulls in every dialect and its backends.
  const demoModule: string = './demo.js';
  if (values.help) {
    const { DEMO_USAGE } = (await import(demoModule)) as { DEMO_USAGE: string };
    process.stdout.write(DEMO_USAGE);
    return 0;
  }
  const engine = values.engine;
  if (engine !== undefined && engine !== 'node' && engine !== 'native') {
    process.stderr.write('tlsproxy demo: --engine must be node or native\n');
    return 2;
  }
  const portBase = values['port-base'] === undefined ? 10000 : Number(values['port-base']);
  if (!Number.isInteger(portBase) || portBase < 0 || portBase > 65535 - 5222) {
    process.stderr.write('tlsproxy demo: --port-base must be a number from 0 to 60313\n');
    return 2;
  }
  const { runDemo } = (await import(demoModule)) as { runDemo: RunDemo };
  let demo: Awaited<ReturnType<RunDemo>>;
  try {
    demo = await runDemo({
      host: values.host ?? '127.0.0.1',
      portBase,
      ...(engine ? { engine } : {}),
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
