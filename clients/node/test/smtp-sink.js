// A minimal SMTP receiver for the end-to-end test: accepts every mail on a loopback port and
// hands each one (envelope and raw data) to the test. Plain SMTP, no TLS, no auth, as the
// example worker speaks it to a local relay.
import { createServer } from 'node:net';

export async function startSmtpSink() {
  const mails = [];
  const waiters = [];
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.setEncoding('utf8');
    let buffer = '';
    let inData = false;
    let mail = { from: '', to: [], data: '' };
    socket.write('220 jetq-test-sink ESMTP\r\n');
    socket.on('data', (chunk) => {
      buffer += chunk;
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n');
          if (end < 0) return;
          mail.data = buffer.slice(0, end);
          buffer = buffer.slice(end + 5);
          inData = false;
          mails.push(mail);
          for (const waiter of waiters.splice(0)) waiter();
          mail = { from: '', to: [], data: '' };
          socket.write('250 OK queued\r\n');
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol < 0) return;
        const line = buffer.slice(0, eol);
        buffer = buffer.slice(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') socket.write('250 jetq-test-sink\r\n');
        else if (verb === 'MAIL') { mail.from = line; socket.write('250 OK\r\n'); }
        else if (verb === 'RCPT') { mail.to.push(line); socket.write('250 OK\r\n'); }
        else if (verb === 'DATA') { inData = true; socket.write('354 End data with <CR><LF>.<CR><LF>\r\n'); }
        else if (verb === 'QUIT') { socket.end('221 Bye\r\n'); return; }
        else if (verb === 'RSET' || verb === 'NOOP') socket.write('250 OK\r\n');
        else socket.write('502 Command not implemented\r\n');
      }
    });
    socket.on('error', () => {});
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  return {
    port: server.address().port,
    mails,
    /** Resolves once `predicate` holds for the received mails (bound it with `within`). */
    async until(predicate) {
      while (!predicate(mails)) await new Promise((resolve) => { waiters.push(resolve); });
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => { server.close(resolve); });
    },
  };
}
