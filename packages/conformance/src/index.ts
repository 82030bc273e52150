// @tlsproxy/conformance: the shared test kit for dialects (README.md).
export { ANNOTATORS, annotateLine, type Rule } from './annotate.js';
export { escapeBytes } from './bytes.js';
export { main } from './cli.js';
export { clientEngineReplay } from './client-engine.js';
export { runClientProperties } from './client-properties.js';
export { type ClientRecordOptions, recordClient } from './client-record.js';
// The client side (issue 18): client transcripts, their replay, properties and run.
export {
  type ClientCall,
  type ClientInput,
  type ClientObservation,
  type ClientSide,
  clientInputs,
  judgeClient,
  observeClient,
  replayClient,
} from './client-replay.js';
export {
  type ClientRunOptions,
  loadClientSuite,
  runClientConformance,
} from './client-runner.js';
export {
  type ClientStep,
  type ClientTranscript,
  loadClientTranscript,
  parseClientTranscript,
} from './client-transcript.js';
export { engineReplay } from './engine.js';
export { ConformanceError, type ConformanceErrorCode } from './errors.js';
export {
  type Aftermath,
  formatMutationReport,
  MUTANT_CLASSES,
  type MutantClass,
  type MutantResult,
  type MutationOptions,
  type MutationReport,
  type MutationSite,
  mutantDialect,
  mutationCheck,
} from './mutate.js';
export { formatMismatch, type Mismatch, matchOutput, PLACEHOLDERS } from './pattern.js';
export { runProperties } from './properties.js';
export { type Event, type RecordOptions, record, renderTranscript } from './record.js';
export { type Clock, type Input, type Observation, observe, replay } from './replay.js';
export { REPLY_RULES, type Reply, type ReplyRules } from './replies.js';
export { formatReport } from './report.js';
export { type CheckResult, type Report, type RunOptions, runConformance } from './runner.js';
export {
  type Constraint,
  loadTranscript,
  parseTranscript,
  type Segment,
  type Step,
  type Transcript,
} from './transcript.js';
