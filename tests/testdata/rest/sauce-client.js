// The official Sauce Labs API client (npm `saucelabs`) against a hub: lists, reads and deletes
// the user's tunnels, printing what it got as one JSON line. Usage: node sauce-client.js
// API_URL USER KEY (NODE_PATH must hold the `saucelabs` package).
const SauceLabs = require('saucelabs').default;
const [host, user, key] = process.argv.slice(2);

(async () => {
  const api = new SauceLabs({ user, key, host });
  const ids = await api.listTunnels(user);
  const full = await api.listTunnels(user, { full: true });
  const shared = await api.listTunnels(user, { all: true });
  const one = await api.getTunnel(user, ids[0]);
  const deleted = await api.deleteTunnel(user, ids[0], { reason: 'ci finished' });
  const after = await api.listTunnels(user);
  console.log(JSON.stringify({ ids, full, shared, one, deleted, after }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
