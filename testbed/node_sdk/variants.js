// The official Unleash Node SDK's answers for many users, one JSON line each, so that a
// test can compare them with conveyor's evaluator (tests/e2e/test_flags.py).
// Usage: node variants.js URL TOKEN FLAG COUNT   (users user-0 … user-COUNT-1; every
// 50th has plan "blocked", the others "pro")
const { startUnleash } = require('unleash-client');

let done = false;
// the SDK never synchronised (its fetch failed): say so rather than exit 0 with no answer
process.on('beforeExit', () => {
  if (!done) {
    process.stderr.write('the Unleash SDK got no flags from the server\n');
    process.exitCode = 1;
  }
});

async function main() {
  const [url, token, flag, count] = process.argv.slice(2);
  const unleash = await startUnleash({
    url,
    appName: 'shop-node',
    customHeaders: { Authorization: token },
    disableMetrics: true,
    refreshInterval: 60_000,
    storageProvider: new (require('unleash-client').InMemStorageProvider)(),
  });
  const out = [];
  for (let i = 0; i < Number(count); i += 1) {
    const context = { userId: `user-${i}`, properties: { plan: i % 50 === 0 ? 'blocked' : 'pro' } };
    const v = unleash.getVariant(flag, context);
    out.push(JSON.stringify({ name: v.name, enabled: v.enabled, payload: v.payload ?? null }));
  }
  process.stdout.write(out.join('\n') + '\n');
  done = true;
  unleash.destroy();
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
