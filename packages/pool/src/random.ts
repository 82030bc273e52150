// Random bytes for connection ids and control keys, cut from a pooled CSPRNG buffer: one
// RAND_bytes call per 4 KiB instead of one per connection. `randomBytes()` for a 16-byte key costs
// a job object, a Buffer and (in OpenSSL's fork check) a getpid() system call each time, which
// showed in the proxy's profile at thousands of connections per second.
import { randomFillSync } from 'node:crypto';

const POOL_BYTES = 4096;
let pool: Buffer = Buffer.alloc(0);
let offset = 0;

/**
 * `n` bytes from the CSPRNG (as `crypto.randomBytes(n)`), each pooled byte handed out once and
 * wiped from the pool as it goes. The pool is per process, so forked workers never share one.
 */
export function randomKey(n: number): Buffer {
  if (!(Number.isInteger(n) && n >= 0 && n <= POOL_BYTES))
    throw new RangeError(`randomKey: ${n} bytes is not an integer from 0 to ${POOL_BYTES}`);
  if (offset + n > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafeSlow(POOL_BYTES));
    offset = 0;
  }
  const out = Buffer.allocUnsafe(n);
  pool.copy(out, 0, offset, offset + n);
  pool.fill(0, offset, offset + n);
  offset += n;
  return out;
}
