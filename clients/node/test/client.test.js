'use strict';
// The Node client against the REAL server: `sahayak-rpc serve` from the repo's
// .venv as a child process on an ephemeral loopback port, with a database in a
// temporary directory, and a champion trained by `sahayak-rpc demo`.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { promisify } = require('node:util');

const grpc = require('@grpc/grpc-js');

const { SahayakClient, status, toFeatureMap } = require('..');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.SAHAYAK_RPC_BIN || path.join(REPO, '.venv', 'bin', 'sahayak-rpc');
const PYTHON = path.join(REPO, '.venv', 'bin', 'python');
const MODEL = 'scheme-sahayak';
const DEMO_OUTCOMES = 2000;

/** One valid Scheme Sahayak row (the same as clients/grpcurl/predict.json). */
const ROW = Object.freeze({
  age: 80,
  annual_income_inr: 550300,
  years_experience: 61,
  craft: 'leather_craft',
  state: 'odisha',
  gender: 'female',
  social_category: 'obc',
  education: 'none',
  has_bank_account: true,
  has_artisan_card: true,
  documents_complete_share: 0.75,
  prior_applications: 4,
  prior_approvals: 1,
  distance_to_office_km: 14.3,
  scheme_type: 'training',
  scheme_max_benefit_inr: 15000,
  scheme_min_age: 18,
  scheme_max_age: 45,
  scheme_income_ceiling_inr: 600000,
  scheme_targets_craft: 'any',
  scheme_women_priority: false,
  scheme_requires_artisan_card: false,
});

/**
 * Start `sahayak-rpc serve --port 0` and read the port it chose from its
 * `server.started` log line (JSON on stderr). stderr is drained for the whole
 * life of the process (an undrained pipe would stall the server); the last
 * lines are kept for failure messages.
 */
function startServer(dbPath) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`${BIN} not found: create the venv first (python3 -m venv .venv && .venv/bin/pip install -e .)`);
  }
  const env = { ...process.env };
  delete env.SAHAYAK_TARGET;
  const argv = [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--db', dbPath, '--log-level', 'info'];
  const proc = spawn(...withParentDeathSignal(argv), { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const tail = [];
  const server = { proc, port: 0, tail, exited: null };
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve((server.exited = { code, signal }))));
  server.exitedPromise = exited;
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s:\n${tail.join('\n')}`)), 30_000);
    readline.createInterface({ input: proc.stderr }).on('line', (line) => {
      tail.push(line);
      if (tail.length > 200) tail.shift();
      if (server.port || !line.startsWith('{')) return;
      try {
        const entry = JSON.parse(line);
        if (entry.event === 'server.started') {
          server.port = entry.port;
          clearTimeout(timer);
          resolve(server);
        }
      } catch { /* not a log line */ }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (code ${code}, signal ${signal}) before it started:\n${tail.join('\n')}`));
    });
  });
  return started;
}

/**
 * On Linux, run the server so that it gets SIGTERM when this test process dies,
 * however it dies (a killed runner, a closed pipe): prctl(PR_SET_PDEATHSIG)
 * in the venv's Python, which survives the exec of the server. Elsewhere the
 * teardown and the 'exit' handler have to do.
 */
function withParentDeathSignal(argv) {
  const python = path.join(path.dirname(BIN), 'python');
  if (process.platform !== 'linux' || !fs.existsSync(python)) return [argv[0], argv.slice(1)];
  const code = 'import ctypes, os, signal, sys\n'
    + 'ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n'
    + `if os.getppid() != ${process.pid}: sys.exit(1)  # the parent is already gone\n`
    + 'os.execv(sys.argv[1], sys.argv[1:])';
  return [python, ['-c', code, ...argv]];
}

async function stopServer(server) {
  if (!server || server.exited) return;
  server.proc.kill('SIGTERM');
  let timer;
  const timeout = new Promise((resolve) => { timer = setTimeout(resolve, 15_000, 'timeout'); });
  const result = await Promise.race([server.exitedPromise, timeout]);
  clearTimeout(timer);
  if (result === 'timeout') {
    server.proc.kill('SIGKILL');
    await server.exitedPromise;
  }
}

/** Resolve with the first event of `watch` that `match` accepts (fail after timeoutMs). */
function nextEvent(watch, match, timeoutMs = 20_000) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const cleanup = () => {
      clearTimeout(timer);
      watch.off('alert', onAlert);
      watch.off('error', onError);
      watch.off('end', onEnd);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no matching alert event in ${timeoutMs} ms; saw ${JSON.stringify(seen)}`));
    }, timeoutMs);
    const onAlert = (event) => {
      seen.push([event.eventType, event.alert.rule]);
      if (match(event)) {
        cleanup();
        resolve(event);
      }
    };
    const onError = (err) => { cleanup(); reject(err); };
    const onEnd = () => { cleanup(); reject(new Error(`the watch ended; saw ${JSON.stringify(seen)}`)); };
    watch.on('alert', onAlert);
    watch.on('error', onError);
    watch.on('end', onEnd);
  });
}

describe('SahayakClient against a real sahayak-rpc server', { timeout: 120_000 }, () => {
  let tmp;
  let server;
  let client;
  let champion;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sahayak-node-'));
    server = await startServer(path.join(tmp, 'test.db'));
    process.once('exit', () => { if (!server.exited) server.proc.kill('SIGKILL'); });
    // The demo model with generated outcomes and a trained champion, via the Python CLI.
    const { stdout } = await promisify(execFile)(
      BIN, ['demo', '--target', `127.0.0.1:${server.port}`, '--outcomes', String(DEMO_OUTCOMES), '--json'],
      { env: { ...process.env, SAHAYAK_TARGET: '' }, timeout: 60_000 },
    );
    const demo = JSON.parse(stdout);
    assert.equal(demo.accepted, DEMO_OUTCOMES);
    assert.equal(demo.training.promoted, true, demo.training.end_reason);
    champion = demo.training.version;
    client = new SahayakClient(`127.0.0.1:${server.port}`, { timeoutMs: 30_000 });
  });

  after(async () => {
    if (client) client.close();
    await stopServer(server);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('reports SERVING health', async () => {
    assert.equal(await client.health(), 'SERVING');
    assert.equal(await client.health('sahayak.v1.InferenceService'), 'SERVING');
  });

  it('predicts with a probability, the serving version, a prediction id and explanations', async () => {
    const p = await client.predict(MODEL, ROW);
    assert.ok(p.probability > 0 && p.probability < 1, `probability ${p.probability}`);
    assert.equal(p.label, p.probability >= 0.5 ? 'LABEL_POSITIVE' : 'LABEL_NEGATIVE');
    assert.equal(p.version, champion);
    assert.match(p.predictionId, /^\S+$/);
    assert.equal(p.contributions.length, 3); // the server's default explain_top_k
    for (const c of p.contributions) {
      assert.ok(Object.hasOwn(ROW, c.feature), `unknown feature ${c.feature}`);
      assert.ok(Number.isFinite(c.contribution) && c.contribution !== 0, `contribution ${c.contribution}`);
      assert.equal(c.value, ROW[c.feature]); // the value came back as the plain JS value sent
    }
    // Sorted by magnitude, largest first.
    const sizes = p.contributions.map((c) => Math.abs(c.contribution));
    assert.deepEqual(sizes, [...sizes].sort((a, b) => b - a));

    // The same row through an explicit version and an alias: the same model answers.
    const byVersion = await client.predict(MODEL, ROW, { version: champion, explainTopK: 5 });
    const byAlias = await client.predict(MODEL, ROW, { alias: 'champion', explainTopK: -1 });
    assert.equal(byVersion.probability, p.probability);
    assert.equal(byAlias.probability, p.probability);
    assert.equal(byVersion.contributions.length, 5);
    assert.equal(byAlias.contributions.length, 0);
    assert.notEqual(byVersion.predictionId, p.predictionId);

    // Another row gives another answer (the features really reach the model).
    const other = await client.predict(MODEL, { ...ROW, age: 30, documents_complete_share: 1, scheme_income_ceiling_inr: null });
    assert.notEqual(other.probability, p.probability);
  });

  it('records an outcome idempotently; the same id with other content is ALREADY_EXISTS', async () => {
    const p = await client.predict(MODEL, ROW);
    const occurredAt = new Date('2025-06-01T10:00:00.250Z');
    const options = { outcomeId: 'node-outcome-1', occurredAt, predictionId: p.predictionId, entities: { artisan_id: 'A-17' } };
    const first = await client.recordOutcome(MODEL, ROW, true, options);
    assert.deepEqual([first.outcomeId, first.duplicate], ['node-outcome-1', false]);
    assert.ok(first.labelsSinceTraining >= 1);

    const again = await client.recordOutcome(MODEL, ROW, true, options);
    assert.deepEqual([again.outcomeId, again.duplicate], ['node-outcome-1', true]);

    for (const [what, features, label, opts] of [
      ['another label', ROW, false, options],
      ['another feature value', { ...ROW, age: 81 }, true, options],
      ['another time', ROW, true, { ...options, occurredAt: new Date('2025-06-02T10:00:00Z') }],
    ]) {
      await assert.rejects(client.recordOutcome(MODEL, features, label, opts), (err) => {
        assert.equal(err.code, status.ALREADY_EXISTS, `${what}: ${err.message}`);
        assert.equal(err.codeName, 'ALREADY_EXISTS');
        assert.equal(err.reason, 'OUTCOME_ID_CONFLICT');
        assert.match(err.details, /node-outcome-1/);
        return true;
      });
    }
    // The stored outcome is unchanged: the original is still a duplicate of itself.
    assert.equal((await client.recordOutcome(MODEL, ROW, true, options)).duplicate, true);
  });

  it('rejects a bad request with INVALID_ARGUMENT naming the field, and stores nothing', async () => {
    const count = async () => {
      const s = await client.call('monitor', 'GetServerStatus', {});
      return s.models.find((m) => m.model === MODEL).outcomeCount;
    };
    const before = await count();
    await assert.rejects(
      client.recordOutcome(MODEL, { ...ROW, age: 'old', craft: 'mason' }, true, { outcomeId: 'node-bad-1' }),
      (err) => {
        assert.equal(err.code, status.INVALID_ARGUMENT);
        assert.equal(err.reason, 'INVALID_FIELD');
        const fields = Object.fromEntries(err.fieldViolations.map((v) => [v.field, v.description]));
        assert.match(fields['outcome.features.age'], /number_value/);
        assert.match(fields['outcome.features.craft'], /unknown category 'mason'/);
        assert.match(err.details, /outcome\.features\.age/);
        return true;
      },
    );
    await assert.rejects(client.predict(MODEL, { ...ROW, age: Number.NaN }), (err) => {
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.deepEqual(err.fieldViolations, [{ field: 'features.age', description: 'must be finite, got nan' }]);
      return true;
    });
    await assert.rejects(client.predict(MODEL, ROW, { version: champion, alias: 'champion' }), (err) => {
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.deepEqual(err.fieldViolations.map((v) => v.field), ['alias']);
      return true;
    });
    await assert.rejects(client.predict('no-such-model', ROW), (err) => {
      assert.equal(err.code, status.NOT_FOUND);
      assert.equal(err.reason, 'MODEL_NOT_FOUND');
      return true;
    });
    assert.equal(await count(), before);
  });

  it('watches alerts: a health check on drifted traffic raises a real drift alert, and a cursor resumes', async () => {
    // Without a cursor a watch starts "from now": the server takes its cursor when the call
    // arrives, which is before the calls below (same connection, sent after it, and the
    // alert is only raised after a batch, the prediction log and a health check).
    const watch = client.watchAlerts(MODEL);
    try {
      assert.equal(await client.health(), 'SERVING');
      // Traffic unlike the training data: the same extreme row 200 times.
      const drifted = { ...ROW, age: 89, years_experience: 70, documents_complete_share: 0, prior_applications: 100 };
      const batch = await client.predictBatch(MODEL, Array.from({ length: 200 }, () => drifted));
      assert.equal(batch.probabilities.length, 200);
      const raisedEvent = nextEvent(watch, (e) => e.eventType === 'ALERT_EVENT_TYPE_RAISED'
        && e.alert.rule === 'ALERT_RULE_FEATURE_DRIFT');
      raisedEvent.catch(() => {}); // awaited below; no unhandled rejection if an assert fails first

      // The prediction log is written off the request path: check until the health check sees the batch.
      let raised;
      for (let attempt = 0; attempt < 100 && !raised; attempt++) {
        const check = await client.runHealthCheck(MODEL);
        raised = check.results[0].raised.find((a) => a.rule === 'ALERT_RULE_FEATURE_DRIFT');
        if (!raised) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(raised, 'the health check raised no feature-drift alert');

      const event = await raisedEvent;
      assert.equal(event.alert.alertId, raised.alertId);
      assert.equal(event.alert.model, MODEL);
      assert.equal(event.alert.state, 'ALERT_STATE_OPEN');
      assert.equal(event.alert.severity, 'ALERT_SEVERITY_CRITICAL'); // most features drifted: the data set drifts
      assert.match(event.alert.message, /features drifted: .*age/);
      assert.ok(event.cursor);

      // Acknowledge it: the live stream reports that too ...
      const ackEvent = nextEvent(watch, (e) => e.eventType === 'ALERT_EVENT_TYPE_ACKNOWLEDGED');
      const acked = await client.acknowledgeAlert(raised.alertId, 'seen from node');
      assert.equal(acked.state, 'ALERT_STATE_ACKNOWLEDGED');
      assert.equal((await ackEvent).alert.alertId, raised.alertId);

      // ... and a new watch from the raised event's cursor replays what came after it, in order.
      const resumed = client.watchAlerts(MODEL, { cursor: event.cursor });
      const replayed = [];
      for await (const e of resumed) {
        replayed.push(e);
        if (e.eventType === 'ALERT_EVENT_TYPE_ACKNOWLEDGED' && e.alert.alertId === raised.alertId) break;
      }
      assert.ok(!replayed.some((e) => e.cursor === event.cursor), 'the cursor event itself was replayed');
      assert.equal(replayed.at(-1).alert.note, 'seen from node');
      assert.ok(resumed.ended || resumed._cancelled, 'breaking out of the loop cancels the stream');
    } finally {
      watch.cancel();
    }
  });

  it('carries names as CSV headers have them (capitals, spaces, dots, dashes) both ways', async () => {
    const LOANS = 'node-loans';
    const features = [
      { name: 'Seniority', type: 'FEATURE_TYPE_NUMERIC', required: true, min: 0, max: 50 },
      { name: 'Monthly Income', type: 'FEATURE_TYPE_NUMERIC' },
      { name: 'loan.amount', type: 'FEATURE_TYPE_NUMERIC' },
      { name: 'is-member', type: 'FEATURE_TYPE_BOOLEAN' },
    ];
    const label = { name: 'Approved', positiveClass: 'yes', negativeClass: 'no' };
    const settings = { training: { scheduleEnabled: false } }; // trained below, when asked
    const created = await client.call('registry', 'CreateModel', { model: { name: LOANS, features, label, settings } });
    assert.deepEqual(created.model.features.map((f) => f.name), features.map((f) => f.name));
    // A deterministic rule over the named features, enough rows to train on.
    for (let i = 0; i < 160; i++) {
      const row = { Seniority: i % 40, 'Monthly Income': (i * 7) % 10, 'loan.amount': (i * 3) % 5, 'is-member': i % 2 === 0 };
      const approved = row.Seniority / 10 + row['Monthly Income'] / 3 - row['loan.amount'] / 2 > 1.5;
      await client.recordOutcome(LOANS, row, approved, { outcomeId: `node-loan-${i}` });
    }
    const { run } = await client.call('training', 'StartTraining', { model: LOANS, families: ['MODEL_FAMILY_LOGISTIC_REGRESSION'] });
    let done = run;
    for (let attempt = 0; attempt < 200 && !['TRAINING_RUN_STATE_SUCCEEDED', 'TRAINING_RUN_STATE_FAILED'].includes(done.state); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      done = (await client.call('training', 'GetTrainingRun', { runId: run.runId })).run;
    }
    assert.equal(done.state, 'TRAINING_RUN_STATE_SUCCEEDED', done.endReason);
    const row = { Seniority: 30, 'Monthly Income': 8, 'loan.amount': 1, 'is-member': true };
    const p = await client.predict(LOANS, row, { version: Number(done.producedVersion), explainTopK: 4 });
    assert.deepEqual(p.contributions.map((c) => c.feature).sort(), Object.keys(row).sort());
    for (const c of p.contributions) assert.equal(c.value, row[c.feature]);
    await assert.rejects(client.recordOutcome(LOANS, { ...row, 'Monthly Income': 'lots' }, true), (err) => {
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.deepEqual(err.fieldViolations.map((v) => v.field), ['outcome.features.Monthly Income']);
      return true;
    });
  });

  it('the watch ends with the gRPC error of a bad request', async () => {
    const watch = client.watchAlerts('no-such-model');
    await assert.rejects(async () => { for await (const _ of watch) { /* nothing expected */ } }, (err) => {
      assert.equal(err.code, status.NOT_FOUND);
      return true;
    });
  });
});

describe('toFeatureMap', () => {
  it('maps JS values onto the FeatureValue oneof like the Python fill_features', () => {
    assert.deepEqual(toFeatureMap({ a: 1.5, b: 'x', c: false, d: null, e: undefined, f: 0 }), {
      a: { numberValue: 1.5 }, b: { stringValue: 'x' }, c: { boolValue: false }, f: { numberValue: 0 },
    });
    assert.throws(() => toFeatureMap({ a: {} }), /feature "a": expected number, string or boolean/);
    assert.throws(() => toFeatureMap(null), TypeError);
  });
});
