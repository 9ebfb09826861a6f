import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sampleMessage, sendMail, startSink, startTestRouter } from '../src/testkit/index.ts';

test('smoke: primary + backup', async () => {
  const primary = await startSink({ name: 'primary' });
  const backup = await startSink({ name: 'backup' });
  const router = await startTestRouter({ config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] } } });
  try {
    const body = sampleMessage('hello');
    const result = await sendMail(router.port, { from: 'a@example.com', to: ['b@example.net'], body });
    console.log(result);
    assert.equal(result.data?.code, 250);
    assert.equal(primary.messages[0]!.body.toString(), body);
    const [copy] = await backup.waitFor(1);
    assert.equal(copy!.body.toString(), body);
  } finally {
    await router.close();
    await primary.close();
    await backup.close();
  }
});
