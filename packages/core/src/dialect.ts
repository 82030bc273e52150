// The Dialect contract lives in @tlsproxy/dialect-kit (a leaf package, so a dialect and the
// conformance suite need no engine and no native addon); core re-exports it unchanged.
export type * from '@tlsproxy/dialect-kit';
