/**
 * `gosmtp-dup hash-password`: reads a password (from the terminal without echo, or from standard
 * input) and prints its scrypt hash for `auth.users[].password_hash`. The password is never
 * printed or logged.
 */
import { hashPassword } from '../core/auth/password.ts';

async function readPassword(): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    let text = '';
    for await (const chunk of stdin) text += chunk;
    return text.replace(/\r?\n$/, '');
  }
  process.stderr.write('Password: ');
  stdin.setRawMode(true);
  let text = '';
  try {
    for await (const chunk of stdin) {
      for (const ch of String(chunk)) {
        if (ch === '\r' || ch === '\n') return text;
        if (ch === '\u0003') throw new Error('cancelled');
        if (ch === '\u007f') text = text.slice(0, -1);
        else text += ch;
      }
    }
    return text;
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

export async function hashPasswordCommand(): Promise<number> {
  const password = await readPassword();
  if (password.length === 0) {
    process.stderr.write('gosmtp-dup: empty password\n');
    return 1;
  }
  process.stdout.write(`${await hashPassword(password)}\n`);
  return 0;
}
