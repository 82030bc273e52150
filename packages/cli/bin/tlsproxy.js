#!/usr/bin/env node
import { main } from '../dist/main.js';

process.exitCode = await main(process.argv.slice(2));
// Connections handed off are owned by the TLS engine; once the proxy closed, leave.
process.exit(process.exitCode);
