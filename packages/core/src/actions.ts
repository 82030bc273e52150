// The action builders live in @tlsproxy/dialect-kit; core re-exports them so
// `@tlsproxy/core/dialect` keeps exporting the same names.
export type { Action } from '@tlsproxy/dialect-kit';
export { bytes, close, log, reportCommand, send, timer } from '@tlsproxy/dialect-kit';
