// The seed's web app in Express: POST /signup {"email": "..."} enqueues the welcome email that a
// jetq worker (the Rust example worker here) sends, and answers 202 with the task id before any
// mail is sent. The idempotency key signup:<email> makes a repeated signup inside the duplicate
// window a no-op. GET /tasks/:id reads a tracked task's status (the welcome email is tracked
// here so the page can show when it went out).
//
//   JETQ_NATS_URL=nats://127.0.0.1:4222 node examples/signup.js
//   curl -XPOST localhost:3000/signup -H 'content-type: application/json' -d '{"email":"ada@example.com"}'
import express from 'express';
import {
  DelayTooLong, InvalidKey, NoStream, NotConnected, Producer, StreamFull, Timeout,
} from '../src/index.js';

/** The welcome mail of the seed scenario (examples/src/web.rs `welcome_email`). */
export function welcomeEmail(email) {
  return {
    to: email,
    subject: 'Welcome to jetq!',
    body: `Hello ${email},\n\nthanks for signing up. This mail was sent by a jetq worker, not by the web request that queued it.\n`,
  };
}

/** The Express app around a connected producer. */
export function app(producer) {
  const web = express();
  web.use(express.json());

  web.post('/signup', async (req, res) => {
    const email = typeof req.body?.email === 'string' ? req.body.email.trim() : '';
    if (!/^[^\s@]+@[^\s@]+$/.test(email)) return res.status(400).json({ error: 'a valid email is required' });
    try {
      const queued = await producer.enqueue('emails', 'send_email', welcomeEmail(email), {
        key: `signup:${email}`,
        trackStatus: true,
      });
      return res.status(202).json({ task_id: queued.id, duplicate: queued.duplicate });
    } catch (err) {
      // What each typed error means for the user (docs/PROTOCOL.md §3, "Publish errors").
      if (err instanceof InvalidKey) return res.status(400).json({ error: err.message });
      if (err instanceof StreamFull) return res.status(503).set('Retry-After', '30').json({ error: 'busy, try again shortly' });
      if (err instanceof Timeout || err instanceof NotConnected) {
        return res.status(503).json({ error: 'could not confirm the signup mail was queued; retrying is safe' });
      }
      if (err instanceof NoStream || err instanceof DelayTooLong) return res.status(500).json({ error: err.message });
      return res.status(500).json({ error: 'internal error' });
    }
  });

  web.get('/tasks/:id', async (req, res) => {
    try {
      const status = await producer.status(req.params.id);
      if (!status) return res.status(404).json({ error: 'no such task (or its status expired)' });
      return res.json(status);
    } catch (err) {
      return res.status(503).json({ error: err.message });
    }
  });
  return web;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const producer = await Producer.connect({ servers: process.env.JETQ_NATS_URL ?? 'nats://127.0.0.1:4222' });
  const port = Number(process.env.PORT ?? 3000);
  app(producer).listen(port, () => console.log(`signup app on http://127.0.0.1:${port}`));
}
