// The TLS engine these tests connect through (issue 15): TLSPROXY_TEST_ENGINE, read by
// fixtures/engine.mjs. node (the default): no engine is given, so connectStartTls uses its own
// shared node:tls engine, as an application gets it. native: one connect-only NativeTlsEngine
// per test file, given as `engine` to every call that does not name its own, closed after it.
import type { TlsEngineApi } from '@tlsproxy/pool';
import { afterAll } from 'vitest';
import { createEngine, engineName, newEngine } from '../../../fixtures/engine.mjs';

export { engineName, newEngine };

const engine: TlsEngineApi | undefined = createEngine
  ? newEngine({ identities: [], connectOnly: true })
  : undefined;
if (engine) afterAll(() => engine.close());

/** Spread into connectStartTls's options: `{ engine }` on native, nothing on node. */
export const viaEngine: { engine?: TlsEngineApi } = engine ? { engine } : {};
