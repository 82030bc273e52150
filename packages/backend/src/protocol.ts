// The proxy ↔ backend protocol: its schema and the hand-off info types live in
// @tlsproxy/handoff (shared with the proxy); here it becomes a live fdpass protocol.

import { defineProtocol } from '@tlsproxy/fdpass';
import { BACKEND_PROTOCOL } from '@tlsproxy/handoff';

export * from '@tlsproxy/handoff';
export const backendProtocol = defineProtocol(BACKEND_PROTOCOL);
