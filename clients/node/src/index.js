// jetq for Node.js: enqueue tasks that jetq workers (in any language) run.
// The protocol: docs/PROTOCOL.md, version 1.5.
export * from './errors.js';
export {
  PROTOCOL_VERSION, Subjects, prepare, validateName, validateKey, isFireId, parseTimestamp,
  formatTimestamp, statusKey, classifyReply, retryPauseMs, ulid, headerBlockSize, isTerminal,
  PRIORITIES, PRIORITY_HEADER, parsePriority, queueToken, splitQueueToken,
} from './protocol.js';
export { Producer } from './producer.js';
export {
  Catalog, DEFAULT_CATALOG_TTL_MS, catalogBucket, catalogKey, catalogEntryJson, parseCatalogEntry,
  withTracking,
} from './catalog.js';
