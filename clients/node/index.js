'use strict';
/**
 * A small promise-based Node.js client for the sahayak-rpc gRPC server.
 *
 * The contract is read at run time from the repository's `protos/` directory
 * (`protos/sahayak/v1/*.proto`); the google/protobuf well-known types come
 * with @grpc/proto-loader, and the two files the server uses that do not
 * (grpc.health.v1 and google.rpc.Status / error details) are vendored in
 * `./proto`.
 *
 * Messages use proto-loader's conventions: camelCase field names, enums as
 * their names (`'LABEL_POSITIVE'`), int64 as JavaScript numbers, defaults
 * filled in, and a oneof's chosen field named by its oneof (`value.kind`).
 *
 * @example
 *   const { SahayakClient } = require('@sahayak/client');
 *   const client = new SahayakClient('127.0.0.1:50051');
 *   const p = await client.predict('scheme-sahayak', { age: 41, craft: 'weaver', has_bank_account: true });
 *   console.log(p.probability, p.label, p.version, p.predictionId, p.contributions);
 *   client.close();
 */

const path = require('node:path');
const { EventEmitter } = require('node:events');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

/** The repository's proto directory (this package lives in `<repo>/clients/node`). */
const DEFAULT_PROTO_DIR = path.resolve(__dirname, '..', '..', 'protos');
/** Protos this package carries itself (health checking, google.rpc error details). */
const VENDORED_PROTO_DIR = path.join(__dirname, 'proto');
const SAHAYAK_FILES = ['common', 'registry', 'training', 'inference', 'monitor', 'feedback']
  .map((name) => `sahayak/v1/${name}.proto`);

/** Options for @grpc/proto-loader: how messages look in JavaScript. */
const LOADER_OPTIONS = Object.freeze({
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

/**
 * @typedef {number | string | boolean | null | undefined} FeatureScalar
 *   A feature value: number -> number_value, string -> string_value,
 *   boolean -> bool_value; null / undefined leaves the feature missing.
 * @typedef {Record<string, FeatureScalar>} Features
 * @typedef {{numberValue?: number, stringValue?: string, boolValue?: boolean, kind?: string}} FeatureValueMessage
 *
 * @typedef {object} Contribution
 * @property {string} feature
 * @property {number} contribution  log-odds of the positive label relative to the training average
 * @property {number | string | boolean | null} value  the feature's value in the request (null: missing)
 *
 * @typedef {object} Prediction
 * @property {string} predictionId
 * @property {number} probability  of the positive label
 * @property {string} label  'LABEL_POSITIVE' or 'LABEL_NEGATIVE' (at the model's threshold)
 * @property {number} version  the model version that answered
 * @property {Contribution[]} contributions  the top feature contributions
 *
 * @typedef {object} RecordedOutcome
 * @property {string} outcomeId
 * @property {boolean} duplicate  true when an identical outcome with this id was already stored
 * @property {number} labelsSinceTraining
 *
 * @typedef {object} AlertEvent
 * @property {string} eventType  'ALERT_EVENT_TYPE_RAISED' | 'ALERT_EVENT_TYPE_ACKNOWLEDGED' | 'ALERT_EVENT_TYPE_RESOLVED'
 * @property {object} alert  the sahayak.v1.Alert message (alertId, model, rule, severity, state, message, ...)
 * @property {string} cursor  pass back as `watchAlerts(model, {cursor})` to resume after this event
 *
 * @typedef {object} FieldViolation
 * @property {string} field  e.g. 'outcome.features.age'
 * @property {string} description
 *
 * @typedef {Error & {code: number, details: string, metadata: grpc.Metadata,
 *   codeName?: string, fieldViolations?: FieldViolation[], reason?: string, domain?: string,
 *   statusDetails?: object[]}} SahayakError
 *   The grpc-js ServiceError, as grpc-js raised it, with the google.rpc.Status
 *   details decoded: `fieldViolations` (google.rpc.BadRequest), `reason` and
 *   `domain` (google.rpc.ErrorInfo), and every detail in `statusDetails`.
 */

/**
 * Load the sahayak.v1 services and grpc.health.v1.
 * @param {string} [protoDir] the directory that holds `sahayak/v1/*.proto`
 * @returns {grpc.GrpcObject}
 */
function loadProtos(protoDir = process.env.SAHAYAK_PROTO_DIR || DEFAULT_PROTO_DIR) {
  const definition = protoLoader.loadSync([...SAHAYAK_FILES, 'grpc/health/v1/health.proto'], {
    ...LOADER_OPTIONS,
    includeDirs: [protoDir, VENDORED_PROTO_DIR],
  });
  return grpc.loadPackageDefinition(definition);
}

// --- google.rpc.Status details ----------------------------------------------

/** @type {protobuf.Root | undefined} */
let statusRoot;

function rpcStatusRoot() {
  if (!statusRoot) {
    statusRoot = new protobuf.Root();
    statusRoot.resolvePath = (origin, target) => {
      const vendored = path.join(VENDORED_PROTO_DIR, target);
      return target.startsWith('google/rpc/') ? vendored : protobuf.util.path.resolve(origin, target);
    };
    statusRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: false });
  }
  return statusRoot;
}

const TO_OBJECT = { longs: Number, enums: String, defaults: true };

/**
 * Decode the `grpc-status-details-bin` trailer of a failed call and attach
 * what it says to the error (which is returned, same object).
 * @param {any} err a grpc-js ServiceError
 * @returns {SahayakError}
 */
function decorateError(err) {
  if (!err || typeof err !== 'object' || typeof err.code !== 'number') return err;
  err.codeName = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code);
  err.fieldViolations = [];
  err.reason = '';
  err.domain = '';
  err.statusDetails = [];
  const raw = err.metadata && typeof err.metadata.get === 'function' ? err.metadata.get('grpc-status-details-bin') : [];
  if (!raw || raw.length === 0) return err;
  try {
    const root = rpcStatusRoot();
    const status = root.lookupType('google.rpc.Status').decode(/** @type {Buffer} */ (raw[0]));
    for (const any of /** @type {any} */ (status).details) {
      const typeName = String(any.type_url || any.typeUrl).split('/').pop();
      const type = root.lookup(typeName);
      if (!(type instanceof protobuf.Type)) {
        err.statusDetails.push({ '@type': any.typeUrl || any.type_url });
        continue;
      }
      const detail = type.toObject(type.decode(any.value), TO_OBJECT);
      err.statusDetails.push({ '@type': typeName, ...detail });
      if (typeName === 'google.rpc.BadRequest') {
        for (const v of detail.fieldViolations) err.fieldViolations.push({ field: v.field, description: v.description });
      } else if (typeName === 'google.rpc.ErrorInfo') {
        err.reason = detail.reason;
        err.domain = detail.domain;
      }
    }
  } catch (decodeError) {
    // A trailer we cannot read must not hide the RPC's own error.
    err.statusDetails.push({ undecodable: String(decodeError) });
  }
  return err;
}

// --- features ---------------------------------------------------------------

/**
 * Convert a plain feature object into a proto feature map (the Python
 * client's `fill_features`): booleans -> bool_value, strings -> string_value,
 * numbers -> number_value; null / undefined leave the feature out (missing).
 * Non-finite numbers are sent as they are: the server rejects them with the
 * field named.
 * @param {Features} features
 * @returns {Record<string, FeatureValueMessage>}
 */
function toFeatureMap(features) {
  if (features === null || typeof features !== 'object' || Array.isArray(features)) {
    throw new TypeError('features must be a plain object mapping name -> number | string | boolean');
  }
  /** @type {Record<string, FeatureValueMessage>} */
  const out = {};
  for (const [name, value] of Object.entries(features)) {
    if (value === null || value === undefined) continue;
    if (typeof value === 'boolean') out[name] = { boolValue: value };
    else if (typeof value === 'string') out[name] = { stringValue: value };
    else if (typeof value === 'number') out[name] = { numberValue: value };
    else if (typeof value === 'bigint') out[name] = { numberValue: Number(value) };
    else throw new TypeError(`feature ${JSON.stringify(name)}: expected number, string or boolean, got ${typeof value}`);
  }
  return out;
}

/**
 * The plain value of a decoded sahayak.v1.FeatureValue (null when unset).
 * @param {FeatureValueMessage | null | undefined} value
 * @returns {number | string | boolean | null}
 */
function fromFeatureValue(value) {
  if (!value || !value.kind) return null;
  return /** @type {any} */ (value)[value.kind];
}

/**
 * @param {Date | number | string} when a Date, milliseconds since the epoch, or an ISO 8601 string
 * @returns {{seconds: number, nanos: number}} a google.protobuf.Timestamp
 */
function toTimestamp(when) {
  const date = when instanceof Date ? when : new Date(when);
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new TypeError(`not a valid time: ${String(when)}`);
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/**
 * @param {{seconds?: number | string, nanos?: number} | null | undefined} ts a decoded google.protobuf.Timestamp
 * @returns {Date | null} null when unset
 */
function fromTimestamp(ts) {
  if (!ts) return null;
  const seconds = Number(ts.seconds || 0);
  const nanos = Number(ts.nanos || 0);
  if (seconds === 0 && nanos === 0) return null;
  return new Date(seconds * 1000 + Math.floor(nanos / 1e6));
}

/**
 * @param {boolean | string | number} label true / 1 / 'LABEL_POSITIVE' = positive, false / 0 / 'LABEL_NEGATIVE' = negative
 * @returns {string}
 */
function toLabel(label) {
  if (label === true || label === 1 || label === 'LABEL_POSITIVE') return 'LABEL_POSITIVE';
  if (label === false || label === 0 || label === 'LABEL_NEGATIVE') return 'LABEL_NEGATIVE';
  throw new TypeError(`label must be a boolean (true = positive), got ${JSON.stringify(label)}`);
}

// --- alert watch ------------------------------------------------------------

/**
 * A live WatchAlerts stream: an EventEmitter ('alert', 'error', 'end') and an
 * async iterable of {@link AlertEvent}s. `cursor` is the cursor of the last
 * event delivered: reconnect with `watchAlerts(model, {cursor: watch.cursor})`
 * to miss and repeat nothing. `cancel()` ends it (the iterator then finishes
 * without an error). Breaking out of a `for await` loop cancels it too.
 *
 * An 'error' event is emitted only when someone listens for it; the async
 * iterator throws the error either way.
 */
class AlertWatch extends EventEmitter {
  /** @param {grpc.ClientReadableStream<any>} call */
  constructor(call) {
    super();
    /** @type {string} */
    this.cursor = '';
    this.ended = false;
    this._call = call;
    this._cancelled = false;
    /** @type {AlertEvent[]} */
    this._queue = [];
    /** @type {Error | null} */
    this._error = null;
    /** @type {Array<() => void>} */
    this._waiters = [];
    call.on('data', (msg) => {
      /** @type {AlertEvent} */
      const event = { eventType: msg.eventType, alert: msg.alert, cursor: msg.cursor };
      this.cursor = event.cursor;
      this._queue.push(event);
      this._wake();
      this.emit('alert', event);
    });
    call.on('error', (err) => {
      if (this._cancelled && err.code === grpc.status.CANCELLED) return this._finish();
      this._error = decorateError(err);
      if (this.listenerCount('error') > 0) this.emit('error', this._error);
      this._finish();
    });
    call.on('end', () => this._finish());
  }

  _finish() {
    if (this.ended) return;
    this.ended = true;
    this._wake();
    this.emit('end');
  }

  _wake() {
    const waiters = this._waiters.splice(0);
    for (const w of waiters) w();
  }

  /** Stop watching (the stream ends without an error). */
  cancel() {
    if (this.ended || this._cancelled) return;
    this._cancelled = true;
    this._call.cancel();
  }

  /** @returns {AsyncGenerator<AlertEvent, void, undefined>} */
  async *[Symbol.asyncIterator]() {
    try {
      for (;;) {
        if (this._queue.length > 0) {
          yield /** @type {AlertEvent} */ (this._queue.shift());
          continue;
        }
        if (this._error) throw this._error;
        if (this.ended) return;
        await new Promise((resolve) => this._waiters.push(() => resolve(undefined)));
      }
    } finally {
      this.cancel();
    }
  }
}

// --- the client -------------------------------------------------------------

class SahayakClient {
  /**
   * @param {string} [target] host:port (default $SAHAYAK_TARGET or 127.0.0.1:50051)
   * @param {object} [options]
   * @param {grpc.ChannelCredentials} [options.credentials] default: insecure (plaintext)
   * @param {number} [options.timeoutMs] deadline of each unary call (default 30000; 0: none)
   * @param {string} [options.protoDir] the directory that holds `sahayak/v1/*.proto`
   * @param {Record<string, string>} [options.metadata] sent with every call
   * @param {grpc.ChannelOptions} [options.channelOptions]
   */
  constructor(target = process.env.SAHAYAK_TARGET || '127.0.0.1:50051', options = {}) {
    const proto = /** @type {any} */ (loadProtos(options.protoDir));
    const credentials = options.credentials || grpc.credentials.createInsecure();
    const channelOptions = {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      ...(options.channelOptions || {}),
    };
    this.target = target;
    this.timeoutMs = options.timeoutMs === undefined ? 30_000 : options.timeoutMs;
    this._metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(options.metadata || {})) this._metadata.set(k, v);
    const v1 = proto.sahayak.v1;
    /** The raw grpc-js stubs, one per service, sharing one channel. */
    this.registry = new v1.ModelRegistryService(target, credentials, channelOptions);
    const channelOverride = { channelOverride: this.registry.getChannel() };
    this.training = new v1.TrainingService(target, credentials, channelOverride);
    this.inference = new v1.InferenceService(target, credentials, channelOverride);
    this.monitor = new v1.MonitorService(target, credentials, channelOverride);
    this.feedback = new v1.FeedbackService(target, credentials, channelOverride);
    this.healthStub = new proto.grpc.health.v1.Health(target, credentials, channelOverride);
    /** @private */
    this._stubs = {
      registry: this.registry, training: this.training, inference: this.inference,
      monitor: this.monitor, feedback: this.feedback, health: this.healthStub,
    };
  }

  /**
   * Call any unary RPC: `call('monitor', 'RunHealthCheck', {model})`.
   * Rejects with the grpc-js ServiceError, details decoded (see {@link SahayakError}).
   * @param {'registry'|'training'|'inference'|'monitor'|'feedback'|'health'} service
   * @param {string} method the RPC's name, e.g. 'Predict'
   * @param {object} request
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<any>}
   */
  call(service, method, request, options = {}) {
    const stub = /** @type {any} */ (this._stubs)[service];
    if (!stub || typeof stub[method] !== 'function') {
      return Promise.reject(new TypeError(`no RPC ${service}.${method}`));
    }
    const timeoutMs = options.timeoutMs === undefined ? this.timeoutMs : options.timeoutMs;
    /** @type {grpc.CallOptions} */
    const callOptions = timeoutMs ? { deadline: new Date(Date.now() + timeoutMs) } : {};
    return new Promise((resolve, reject) => {
      stub[method](request, this._metadata.clone(), callOptions, (/** @type {any} */ err, /** @type {any} */ response) => {
        if (err) reject(decorateError(err));
        else resolve(response);
      });
    });
  }

  /**
   * Score one row with the champion, or with `version` / `alias`.
   * @param {string} model
   * @param {Features} features
   * @param {{version?: number, alias?: string, explainTopK?: number, entities?: Record<string, string>, timeoutMs?: number}} [options]
   *   explainTopK: contributions to return (server default 3; negative: none)
   * @returns {Promise<Prediction>}
   */
  async predict(model, features, options = {}) {
    const response = await this.call('inference', 'Predict', {
      model,
      version: options.version || 0,
      alias: options.alias || '',
      features: toFeatureMap(features),
      explainTopK: options.explainTopK || 0,
      entities: options.entities || {},
    }, options);
    return {
      predictionId: response.predictionId,
      probability: response.probability,
      label: response.label,
      version: response.version,
      contributions: response.contributions.map((/** @type {any} */ c) => ({
        feature: c.feature, contribution: c.contribution, value: fromFeatureValue(c.value),
      })),
    };
  }

  /**
   * Score many rows in one call (row-wise). Row i's prediction id is `${batchId}:${i}`.
   * @param {string} model
   * @param {Features[]} rows
   * @param {{version?: number, alias?: string, explainTopK?: number, timeoutMs?: number}} [options]
   * @returns {Promise<{version: number, batchId: string, probabilities: number[], labels: string[]}>}
   */
  async predictBatch(model, rows, options = {}) {
    const response = await this.call('inference', 'PredictBatch', {
      model,
      version: options.version || 0,
      alias: options.alias || '',
      rows: rows.map((row) => ({ features: toFeatureMap(row) })),
      explainTopK: options.explainTopK || 0,
    }, options);
    return {
      version: response.version, batchId: response.batchId,
      probabilities: response.probabilities, labels: response.labels,
    };
  }

  /**
   * Record one labelled outcome. Idempotent by `outcomeId`: the same outcome
   * again resolves with `duplicate: true`; the same id with different content
   * rejects with ALREADY_EXISTS (reason OUTCOME_ID_CONFLICT).
   * @param {string} model
   * @param {Features} features
   * @param {boolean | 'LABEL_POSITIVE' | 'LABEL_NEGATIVE'} label true = positive (e.g. approved)
   * @param {{outcomeId?: string, occurredAt?: Date | number | string, predictionId?: string,
   *   entities?: Record<string, string>, metadata?: Record<string, string>, timeoutMs?: number}} [options]
   *   outcomeId: empty lets the server assign one (a retry may then store it twice);
   *   occurredAt: default, when the server receives it
   * @returns {Promise<RecordedOutcome>}
   */
  async recordOutcome(model, features, label, options = {}) {
    /** @type {Record<string, any>} */
    const outcome = {
      outcomeId: options.outcomeId || '',
      features: toFeatureMap(features),
      label: toLabel(label),
      entities: options.entities || {},
      metadata: options.metadata || {},
      predictionId: options.predictionId || '',
    };
    if (options.occurredAt !== undefined && options.occurredAt !== null) {
      outcome.occurredAt = toTimestamp(options.occurredAt);
    }
    const response = await this.call('training', 'RecordOutcome', { model, outcome }, options);
    return {
      outcomeId: response.outcomeId,
      duplicate: response.duplicate,
      labelsSinceTraining: response.labelsSinceTraining,
    };
  }

  /**
   * Stream alert events (raised, acknowledged, resolved), of one model or all.
   * Without a cursor the stream starts now; with one it first replays every
   * event after that cursor.
   * @param {string} [model] default: every model
   * @param {{cursor?: string, minSeverity?: string}} [options]
   *   minSeverity: 'ALERT_SEVERITY_INFO' | 'ALERT_SEVERITY_WARNING' | 'ALERT_SEVERITY_CRITICAL'
   * @returns {AlertWatch}
   */
  watchAlerts(model = '', options = {}) {
    const call = this.monitor.WatchAlerts({
      model: model || '',
      cursor: options.cursor || '',
      minSeverity: options.minSeverity || 'ALERT_SEVERITY_UNSPECIFIED',
    }, this._metadata.clone());
    return new AlertWatch(call);
  }

  /**
   * Run the server's health check now (metrics, drift, freshness), which raises and resolves alerts.
   * @param {string} [model] default: every model
   * @returns {Promise<any>} the sahayak.v1.RunHealthCheckResponse
   */
  runHealthCheck(model = '') {
    return this.call('monitor', 'RunHealthCheck', { model });
  }

  /**
   * Acknowledge an open alert.
   * @param {string} alertId
   * @param {string} [note]
   * @returns {Promise<any>} the sahayak.v1.Alert after the change
   */
  async acknowledgeAlert(alertId, note = '') {
    const response = await this.call('monitor', 'AcknowledgeAlert', { alertId, note });
    return response.alert;
  }

  /**
   * The grpc.health.v1 status: 'SERVING', 'NOT_SERVING', ...
   * @param {string} [service] default: the whole server
   * @returns {Promise<string>}
   */
  async health(service = '') {
    const response = await this.call('health', 'Check', { service });
    return response.status;
  }

  /**
   * Wait until the channel is connected.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  waitReady(timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      this.registry.waitForReady(new Date(Date.now() + timeoutMs), (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Close the channel (cancel open watches first: a stream in flight keeps running until it ends). */
  close() {
    this.registry.close();
  }
}

module.exports = {
  SahayakClient,
  AlertWatch,
  loadProtos,
  decorateError,
  toFeatureMap,
  fromFeatureValue,
  toTimestamp,
  fromTimestamp,
  grpc,
  status: grpc.status,
  DEFAULT_PROTO_DIR,
};
