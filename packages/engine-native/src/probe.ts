// What callers outside the package may ask of the addon; its raw binding stays inside the package.
import { binding } from './loader.js';

/** Load the addon (and the OpenSSL symbols it takes from node); throws a NativeEngineError that
 * says why and names `engine: node` when it cannot. */
export function checkNative(): void {
  binding();
}

/** The OpenSSL the engine runs (the one inside node). */
export function opensslVersion(): ReturnType<ReturnType<typeof binding>['openssl']> {
  return binding().openssl();
}

/** Bytes the process has malloc'd now (for memory measurements in benchmarks). */
export function mallocBytes(): number {
  return binding().mallocBytes();
}
