/**
 * A private Postfix instance for end-to-end tests: its own main.cf/master.cf, queue and data
 * folders under a temporary folder, SMTP on a loopback port, started and stopped with
 * `postfix -c DIR`. The system's own Postfix instance is never configured or started.
 * `.ci/run` installs Postfix from Debian's packages; where it cannot be installed the tests skip.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { freePort, waitForPort } from '../../src/testkit/raw-server.ts';

const run = promisify(execFile);

export interface PostfixInstance {
  readonly port: number;
  readonly dir: string;
  /** Postfix's log so far (its maillog_file). */
  log(): Promise<string>;
  /** `postqueue -f`: attempt deferred mail now. */
  flush(): Promise<void>;
  /** Queue ids and their recipients' status, from `postqueue -j`. */
  queue(): Promise<Array<{ queue_id: string; queue_name: string; recipients: Array<{ address: string; delay_reason?: string }> }>>;
  stop(): Promise<void>;
}

export async function postfixAvailable(): Promise<boolean> {
  try {
    await run('postconf', ['-d', 'mail_version']);
    return true;
  } catch {
    return false;
  }
}


/** The transport map lines: `domain nexthop`, e.g. `example.com smtp:[127.0.0.1]:2525`. */
export async function startPostfix(t: TestContext, dir: string, transport: Record<string, string>, extraMain: Record<string, string> = {}): Promise<PostfixInstance> {
  const conf = join(dir, 'conf');
  const queue = join(dir, 'queue');
  const data = join(dir, 'data');
  for (const d of [conf, queue, data]) await mkdir(d, { recursive: true });
  // Postfix's daemons run as the postfix user and must reach the queue (mkdtemp makes 0700).
  await chmod(dir, 0o755);
  const { stdout: uid } = await run('id', ['-u', 'postfix']);
  const { stdout: gid } = await run('id', ['-g', 'postfix']);
  await chown(data, Number(uid), Number(gid));
  const port = await freePort();
  const main: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: queue,
    data_directory: data,
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    myhostname: 'postfix.test',
    mydomain: 'postfix.test',
    myorigin: '$myhostname',
    mydestination: '',
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    relay_domains: '',
    smtpd_relay_restrictions: 'permit_mynetworks, reject',
    transport_maps: `hash:${conf}/transport`,
    maillog_file_prefixes: dir,
    maillog_file: join(dir, 'maillog'),
    disable_dns_lookups: 'yes',
    smtp_host_lookup: 'native',
    alias_maps: '',
    alias_database: '',
    // Fast retries, so a deferred message is tried again within the test.
    minimal_backoff_time: '1s',
    maximal_backoff_time: '2s',
    queue_run_delay: '1s',
    ...extraMain,
  };
  await writeFile(join(conf, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  // No chroot: the private instance has no chroot jail set up.
  await writeFile(
    join(conf, 'master.cf'),
    `127.0.0.1:${port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`,
  );
  await writeFile(join(conf, 'transport'), Object.entries(transport).map(([domain, nexthop]) => `${domain} ${nexthop}`).join('\n') + '\n');
  await run('postmap', ['-c', conf, join(conf, 'transport')]);
  try {
    await run('postfix', ['-c', conf, 'start']);
  } catch (err) {
    throw new Error(`postfix did not start: ${(err as Error).message}\n${await readFile(join(dir, 'maillog'), 'utf8').catch(() => '')}`);
  }
  const instance: PostfixInstance = {
    port,
    dir,
    log: async () => readFile(join(dir, 'maillog'), 'utf8').catch(() => ''),
    flush: async () => void (await run('postqueue', ['-c', conf, '-f'])),
    queue: async () => {
      const { stdout } = await run('postqueue', ['-c', conf, '-j']);
      return stdout.split('\n').filter(Boolean).map((line) => JSON.parse(line));
    },
    stop: async () => {
      await run('postfix', ['-c', conf, 'stop']).catch(() => undefined);
    },
  };
  t.after(() => instance.stop());
  // Ready when smtpd answers.
  if (await waitForPort(port)) return instance;
  throw new Error(`postfix did not start; log:\n${await instance.log()}`);
}
