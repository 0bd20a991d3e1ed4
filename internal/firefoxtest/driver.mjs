// Drives Debian's firefox-esr over WebDriver BiDi with puppeteer-core for
// the Go package internal/firefoxtest. Never downloads a browser.
//
// Protocol: one JSON object per line. The driver first writes
//   {"ready":true,"version":"..."}   or   {"ready":false,"error":"..."}
// then reads commands from stdin and answers each with the same id:
//   {"id":1,"cmd":"navigate","url":"http://..."}      -> {"id":1,"ok":true}
//   {"id":2,"cmd":"eval","expr":"1+1","timeoutMs":5000} -> {"id":2,"ok":true,"value":2}
//   {"id":3,"cmd":"close"}                               -> {"id":3,"ok":true}, then kills Firefox and exits
// A failed command answers {"id":n,"ok":false,"error":"..."}. Page console
// messages and errors are written as {"console":"..."} lines.
// Configuration comes from the environment: FIREFOXTEST_BIN (the browser),
// FIREFOXTEST_PROFILE (an empty profile directory), FIREFOXTEST_PREFS (JSON
// object of extra prefs).
import puppeteer from 'puppeteer-core';
import readline from 'node:readline';

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const prefs = {
  // WebRTC between hosts of a test network: host candidates with their
  // addresses (no mDNS names nothing resolves), loopback allowed.
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.peerconnection.ice.default_address_only': false,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // Nothing phones home (it could not anyway: the test network ends here).
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'app.update.enabled': false,
  'app.normandy.enabled': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
  'media.gmp-manager.updateEnabled': false,
  ...JSON.parse(process.env.FIREFOXTEST_PREFS || '{}'),
};

let browser, page;
try {
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOXTEST_BIN || '/usr/bin/firefox-esr',
    headless: true,
    userDataDir: process.env.FIREFOXTEST_PROFILE,
    extraPrefsFirefox: prefs,
    protocolTimeout: 60000,
    // The Go side owns the browser's lifetime (it kills the whole PID
    // namespace): puppeteer must not install its own signal handlers.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  const pages = await browser.pages();
  page = pages.length > 0 ? pages[0] : await browser.newPage();
  page.on('console', (m) => send({ console: `${m.type()}: ${m.text()}` }));
  page.on('pageerror', (e) => send({ console: `pageerror: ${e && e.message ? e.message : e}` }));
  send({ ready: true, version: await browser.version() });
} catch (e) {
  send({ ready: false, error: String(e && e.stack ? e.stack : e) });
  process.exit(1);
}

function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function handle(msg) {
  switch (msg.cmd) {
    case 'navigate':
      await withTimeout(page.goto(msg.url, { waitUntil: 'load' }), msg.timeoutMs || 30000, 'navigate');
      return undefined;
    case 'eval': {
      // The expression's value, promises awaited, as JSON text (undefined
      // becomes null) so that any JSON value reaches Go unchanged.
      const src = `(async () => { const v = await (${msg.expr}\n); return v === undefined ? 'null' : JSON.stringify(v); })()`;
      const text = await withTimeout(page.evaluate(src), msg.timeoutMs || 30000, 'eval');
      return JSON.parse(text);
    }
    case 'close': {
      // A graceful browser.close() takes Firefox about 5 s here; the
      // profile is thrown away, so kill it. (Node is PID 1 of the driver's
      // PID namespace: its exit takes every Firefox process with it anyway.)
      const proc = browser.process();
      if (proc) proc.kill('SIGKILL');
      return undefined;
    }
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
}

// Commands run one at a time, in order.
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  chain = chain.then(async () => {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch (e) {
      send({ ok: false, error: `bad command: ${e}` });
      return;
    }
    try {
      const value = await handle(msg);
      send({ id: msg.id, ok: true, value: value === undefined ? null : value });
    } catch (e) {
      send({ id: msg.id, ok: false, error: String(e && e.message ? e.message : e) });
    }
    if (msg.cmd === 'close') process.exit(0);
  });
});
// stdin closed: the Go side went away.
rl.on('close', () => {
  chain.finally(() => {
    const proc = browser.process();
    if (proc) proc.kill('SIGKILL');
    process.exit(0);
  });
});
