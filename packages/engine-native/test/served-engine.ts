// One NativeTlsEngine and a loopback listener handing it every connection, for the tests of one
// describe block (apart from helpers.ts: the fuzz target imports that outside vitest).
import { afterAll, beforeAll } from 'vitest';
import { type NativeEngineOptions, NativeTlsEngine } from '../src/index.js';
import { type Served, serve } from './helpers.js';

export interface ServedEngine {
  readonly engine: NativeTlsEngine;
  readonly served: Served;
}

export function servedEngine(options: NativeEngineOptions): ServedEngine {
  let engine: NativeTlsEngine | undefined;
  let served: Served | undefined;
  beforeAll(async () => {
    engine = new NativeTlsEngine(options);
    served = await serve(engine);
  });
  afterAll(async () => {
    await served?.close();
    await engine?.close();
  });
  return {
    get engine() {
      return engine!;
    },
    get served() {
      return served!;
    },
  };
}
