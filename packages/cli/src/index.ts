// @tlsproxy/cli: the tlsproxy command.

export type { CliArgs } from './args.js';
export { parseCli, USAGE, UsageError } from './args.js';
export { main, start } from './main.js';
