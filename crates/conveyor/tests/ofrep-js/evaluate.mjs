// Evaluates flags through the unmodified OpenFeature JS server SDK and its OFREP provider
// against a running Conveyor (OFREP_URL, OFREP_KEY). Prints one JSON line of results, then
// again for every line read on stdin, so the test can change a flag in between and see the
// same client (not restarted) pick the change up.
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { createInterface } from 'node:readline';

const provider = new OFREPProvider({
  baseUrl: process.env.OFREP_URL,
  headers: [['Authorization', `Bearer ${process.env.OFREP_KEY}`]],
});
await OpenFeature.setProviderAndWait(provider);
const client = OpenFeature.getClient();

async function evaluate() {
  const beta = { targetingKey: 'user-1', email: 'ada@example.com' };
  const other = { targetingKey: 'user-2', email: 'bob@example.org' };
  const details = await client.getBooleanDetails('new-checkout', false, beta);
  return {
    boolean: details.value,
    booleanReason: details.reason,
    booleanVariant: details.variant,
    string: await client.getStringValue('banner-text', 'fallback', beta),
    number: await client.getNumberValue('max-items', -1, beta),
    object: await client.getObjectValue('theme', {}, beta),
    targetedBeta: await client.getStringValue('greeting', 'none', beta),
    targetedOther: await client.getStringValue('greeting', 'none', other),
    missing: (await client.getBooleanDetails('no-such-flag', true, beta)).errorCode ?? null,
  };
}

console.log(JSON.stringify(await evaluate()));
const lines = createInterface({ input: process.stdin });
for await (const _ of lines) {
  console.log(JSON.stringify(await evaluate()));
}
await OpenFeature.close();
