/**
 * Password hashes for `auth.users`: scrypt (node:crypto, memory-hard), stored as
 * `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>`; compared in constant time.
 * `gosmtp-dup hash-password` prints one.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const KEY_LENGTH = 32;
const DEFAULTS = { N: 16384, r: 8, p: 1 };

function derive(password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password.normalize('NFC'), salt, KEY_LENGTH, { ...options, maxmem: MAX_MEMORY }, (err, key) => (err ? reject(err) : resolve(key))));
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, DEFAULTS);
  return `scrypt$${DEFAULTS.N}$${DEFAULTS.r}$${DEFAULTS.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

const HASH_RE = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/;

/** Cost parameters this process can compute within its memory limit (scrypt needs 128·N·r·p bytes). */
const MAX_MEMORY = 64 * 1024 * 1024;

function usable(N: number, r: number, p: number): boolean {
  return N >= 2 && (N & (N - 1)) === 0 && r >= 1 && p >= 1 && 128 * N * r * p <= MAX_MEMORY / 2 && N <= 2 ** 20;
}

export function isPasswordHash(text: string): boolean {
  const match = HASH_RE.exec(text);
  return match !== null && usable(Number(match[1]), Number(match[2]), Number(match[3]));
}

/** A hash of nothing anyone knows, verified for unknown users so that timing does not tell them apart. */
export const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';

export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const match = HASH_RE.exec(hash);
  if (!match || !usable(Number(match[1]), Number(match[2]), Number(match[3]))) return false;
  const [, N, r, p, salt, expected] = match as unknown as [string, string, string, string, string, string];
  const want = Buffer.from(expected, 'base64');
  const got = await derive(password, Buffer.from(salt, 'base64'), { N: Number(N), r: Number(r), p: Number(p) });
  return want.length === got.length && timingSafeEqual(want, got);
}
