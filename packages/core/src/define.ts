// Shape checks and option/limit validation live in @tlsproxy/dialect-kit, so the conformance
// suite and dialect tests run them without the engine; core re-exports them unchanged.
export {
  defineDialect,
  dialectProblems,
  resolveLimits,
  resolveOptions,
} from '@tlsproxy/dialect-kit';
