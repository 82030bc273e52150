#!/usr/bin/env node
import { main } from '../dist/cli.js';

process.exitCode = await main(process.argv.slice(2));
// Engine replays leave the TLS engine's worker state behind; the report is written, so leave.
process.exit(process.exitCode);
