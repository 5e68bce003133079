// Test support: the shared vectors, and a real nats-server per test file on a free port with its
// own store directory (the binary from JETQ_TEST_NATS_SERVER, as scripts/test.sh passes it).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function loadVectors() {
  return JSON.parse(readFileSync(join(REPO, 'docs', 'conformance', 'vectors.json'), 'utf8'));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Rejects after `ms` with a message naming what did not happen. */
export async function within(ms, what, promise) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** The nats-server binary, or null (the tests that need one are then skipped). */
export function natsServerBinary() {
  return process.env.JETQ_TEST_NATS_SERVER || null;
}

/**
 * Starts nats-server with JetStream on a free loopback port; `stop()` removes its store.
 * `extraConfig` is appended to the configuration file (e.g. an `authorization` block).
 */
export async function startNatsServer({ extraConfig = '' } = {}) {
  const binary = natsServerBinary();
  if (!binary) throw new Error('JETQ_TEST_NATS_SERVER is not set');
  const dir = mkdtempSync(join(tmpdir(), 'jetq-node-nats-'));
  const port = await freePort();
  const config = join(dir, 'nats-server.conf');
  writeFileSync(config, `listen: 127.0.0.1:${port}\njetstream {\n  store_dir: "${join(dir, 'store')}"\n}\n${extraConfig}\n`);
  const child = spawn(binary, ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  const ready = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      logs += chunk;
      if (logs.includes('Server is ready')) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`nats-server exited with ${code}:\n${logs}`)));
  });
  try {
    await within(10_000, 'nats-server ready', ready);
  } catch (err) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    logs: () => logs,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await within(10_000, 'nats-server exit', exited).catch(() => child.kill('SIGKILL'));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Creates the task stream as jetq workers do (§2), for tests that run no worker. */
export async function createTaskStream(jsm, prefix = 'jetq') {
  const upper = prefix.toUpperCase().replaceAll('-', '_');
  await jsm.streams.add({
    name: `${upper}_TASKS`, subjects: [`${prefix}.task.*.*`], retention: 'workqueue',
    storage: 'file', discard: 'new', duplicate_window: 120 * 1e9,
  });
}
