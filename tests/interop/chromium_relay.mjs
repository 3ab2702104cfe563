#!/usr/bin/env node
// A relay-only WebRTC connection in headless Chromium, through one TURN server.
//
// Used by tests/interop.rs: a browser's TURN client (libwebrtc, as shipped in
// Debian's Chromium), driven by playwright-core, against the server under test.
//
// What it does, all on loopback and bounded in time:
//   1. launches Chromium headless with the flags below (its own profile in a
//      temporary directory, removed at exit);
//   2. in one page, makes two RTCPeerConnections, A and B, both with
//      iceTransportPolicy "relay" and the one ICE server given: each gathers
//      only relayed candidates (Allocate on the TURN server), so every packet
//      between them goes client → server → relay → relay → server → client;
//   3. A opens a DataChannel; A sends COUNT numbered pings that B echoes, and
//      B, once A's first ping is in, sends COUNT pings that A echoes; each
//      side checks that it got every echo, in order, with the right payload;
//   4. reads getStats() on both sides: the selected candidate pair's local
//      candidate must be of type "relay" and, where Chromium reports it, its
//      relayProtocol must be the transport under test (udp, tcp or tls).
//
// Usage:
//   node chromium_relay.mjs --url turn:127.0.0.1:PORT?transport=udp \
//       --username U --credential C --transport udp|tcp|tls \
//       [--chromium PATH] [--npm-prefix DIR] [--count N] [--timeout SECONDS]
//
// --npm-prefix is the directory playwright-core was installed into with
// `npm install --prefix DIR` (default $UTURN_NPM_PREFIX, else beside this file).
//
// It prints one line that tests/interop.rs parses:
//   RESULT {"ok":true,...}
// and exits 0 when the connection was relayed over the expected transport and
// every message came back, 1 when it was not, 2 on bad usage, 3 when
// playwright-core cannot be loaded (printed as MISSING playwright-core).
//
// Chromium flags (CHROMIUM_ARGS below) and why:
//   --ignore-certificate-errors  the turns: servers have a self-signed
//       certificate, which Chromium's TURN-over-TLS client would refuse.
//   --host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1
//       no DNS look-ups at all (Chromium looks up Google's hosts at start-up
//       even with playwright's background-networking switches), except for
//       the TURN server's own name. The rules apply to IP literals too: without
//       EXCLUDE 127.0.0.1, TURN over TCP to 127.0.0.1 fails (701, "Failed to
//       establish connection"), while UDP, which is not resolved, works.
//   --disable-features=WebRtcHideLocalIpsWithMdns,...  without it Chromium
//       multicasts an mDNS announcement of its default-route address to the
//       LAN (a name for a host candidate that relay-only never signals).
// No loopback switch is needed: a page without camera or microphone
// permission does not enumerate network adapters, so Chromium binds its ICE
// sockets to the any-address (0.0.0.0, seen with ss) and the kernel picks
// 127.0.0.1 as the source toward a 127.0.0.1 TURN server (coturn logs
// "remote 127.0.0.1:…" for every session). --allow-loopback-in-peer-connection
// would only add the loopback adapter to an enumeration that does not happen;
// the runs pass without it. The relayed candidates on 127.0.0.1 are taken as
// remote candidates as they are.
// playwright adds --no-sandbox (needed as root) and --headless itself.

import { createRequire } from "node:module";
import path from "node:path";

function usage(msg) {
  console.error(`chromium_relay.mjs: ${msg}`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    chromium: "/usr/lib/chromium/chromium",
    npmPrefix: process.env.UTURN_NPM_PREFIX || "",
    count: 5,
    timeout: 30,
  };
  const names = {
    "--url": "url",
    "--username": "username",
    "--credential": "credential",
    "--transport": "transport",
    "--chromium": "chromium",
    "--npm-prefix": "npmPrefix",
    "--count": "count",
    "--timeout": "timeout",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) usage(`unknown or incomplete argument ${argv[i]}`);
    opts[key] = argv[i + 1];
  }
  for (const k of ["url", "username", "credential", "transport"]) {
    if (!opts[k]) usage(`--${k} is required`);
  }
  if (!["udp", "tcp", "tls"].includes(opts.transport)) usage("--transport is udp, tcp or tls");
  opts.count = Number(opts.count);
  opts.timeout = Number(opts.timeout);
  if (!(opts.count >= 1 && opts.count <= 1000)) usage("--count is 1..1000");
  if (!(opts.timeout > 0 && opts.timeout <= 300)) usage("--timeout is 1..300 seconds");
  return opts;
}

function loadPlaywright(dir) {
  // playwright-core lives in target/interop-node (installed by .ci/run), not
  // beside this file: resolve it from there.
  const base = dir ? path.join(path.resolve(dir), "package.json") : import.meta.url;
  try {
    return createRequire(base)("playwright-core");
  } catch (e) {
    console.log(`MISSING playwright-core: ${e.message.split("\n")[0]}`);
    process.exit(3);
  }
}

// Runs inside the page. Everything it returns is plain JSON.
async function relayInPage({ iceServer, count, timeoutMs }) {
  const started = performance.now();
  const log = [];
  const note = (what) => log.push(`${Math.round(performance.now() - started)}ms ${what}`);
  const config = { iceServers: [iceServer], iceTransportPolicy: "relay" };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  const candidates = { a: [], b: [] };
  const iceErrors = [];
  for (const [name, pc, other] of [["a", a, b], ["b", b, a]]) {
    pc.onicecandidate = (e) => {
      if (!e.candidate) return;
      candidates[name].push(e.candidate.candidate);
      other.addIceCandidate(e.candidate).catch((err) => note(`${name}: addIceCandidate: ${err}`));
    };
    pc.onicecandidateerror = (e) =>
      iceErrors.push({ pc: name, url: e.url, code: e.errorCode, text: e.errorText });
    pc.oniceconnectionstatechange = () => note(`${name}: ice ${pc.iceConnectionState}`);
  }

  let timer;
  let timedOut = false;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
  });

  // Each side answers "ping:<from>:<i>" with "pong:<from>:<i>" and records
  // the pongs it gets for its own pings. A sends its pings once the channel
  // is open; B sends its own when A's first ping arrives, so that neither
  // sends before it has seen the channel carry data from the other side.
  // (When B also sent at "open", about 2 runs in 100 timed out; the one seen
  // in detail, while network interfaces came and went on the host, had
  // Chromium deliver B's pongs to A but never B's pings, which B had sent
  // first on the same ordered channel. Not understood; not seen since.)
  function sendPings(name, channel) {
    for (let i = 0; i < count; i++) channel.send(`ping:${name}:${i}`);
  }
  function wire(name, channel) {
    const got = { pings: [], pongs: [] };
    channel.onmessage = (e) => {
      const msg = String(e.data);
      if (msg.startsWith("ping:")) {
        got.pings.push(msg);
        channel.send("pong:" + msg.slice(5));
        if (name === "b" && got.pings.length === 1) sendPings(name, channel);
      } else {
        got.pongs.push(msg);
      }
    };
    return got;
  }
  const open = (channel) =>
    channel.readyState === "open"
      ? Promise.resolve()
      : new Promise((resolve) => channel.addEventListener("open", resolve, { once: true }));
  const waitFor = async (cond) => {
    while (!cond() && !timedOut) await new Promise((r) => setTimeout(r, 20));
  };

  const result = { candidates, iceErrors, log };
  const expect = (from) => Array.from({ length: count }, (_, i) => `pong:${from}:${i}`);
  let chA, chB, gotA, gotB;
  try {
    chA = a.createDataChannel("echo", { ordered: true });
    gotA = wire("a", chA);
    const chBPromise = new Promise((resolve) => (b.ondatachannel = (e) => resolve(e.channel)));

    await a.setLocalDescription();
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription();
    await a.setRemoteDescription(b.localDescription);

    chB = await Promise.race([chBPromise, deadline]);
    gotB = wire("b", chB);
    await Promise.race([Promise.all([open(chA), open(chB)]), deadline]);
    note("datachannel open");

    sendPings("a", chA);
    await Promise.race([
      waitFor(() => gotA.pongs.length >= count && gotB.pongs.length >= count),
      deadline,
    ]);
    note("echoes received");
  } catch (e) {
    result.error = String(e && e.message ? e.message : e);
  }
  clearTimeout(timer);

  // What each side got (also after a failure, to show how far it went).
  for (const [name, got, channel] of [["a", gotA, chA], ["b", gotB, chB]]) {
    if (!got) continue;
    result.echoes = result.echoes || {};
    result.echoes[`${name}_sent`] = count;
    result.echoes[`${name}_echoed`] = got.pongs.length;
    result.echoes[`${name}_in_order`] = JSON.stringify(got.pongs) === JSON.stringify(expect(name));
    result.echoes[`${name}_pings_seen`] = got.pings.length;
    result.echoes[`${name}_channel`] = channel.readyState;
  }

  // The selected pair, from each side's transport stats; after a failure,
  // every pair with its state too.
  result.selected = {};
  result.states = {};
  for (const [name, pc] of [["a", a], ["b", b]]) {
    const stats = await pc.getStats();
    result.states[name] = `ice ${pc.iceConnectionState}, pc ${pc.connectionState}`;
    const cand = (id) => {
      const c = id && stats.get(id);
      return c
        ? {
            candidateType: c.candidateType,
            relayProtocol: c.relayProtocol,
            protocol: c.protocol,
            address: c.address,
            port: c.port,
            url: c.url,
          }
        : null;
    };
    let pairId;
    const pairs = [];
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      if (s.type === "candidate-pair") {
        pairs.push(`${s.state}${s.nominated ? " nominated" : ""} sent ${s.bytesSent} received ${s.bytesReceived}`);
      }
    });
    const pair = pairId && stats.get(pairId);
    result.selected[name] = pair
      ? {
          state: pair.state,
          local: cand(pair.localCandidateId),
          remote: cand(pair.remoteCandidateId),
          bytesSent: pair.bytesSent,
          bytesReceived: pair.bytesReceived,
        }
      : null;
    if (result.error) result.states[`${name}_pairs`] = pairs;
  }
  a.close();
  b.close();
  result.elapsed_ms = Math.round(performance.now() - started);
  return result;
}

// What the caller asserts, decided here too so that the script alone says
// whether the run proves the transport.
function verdict(r, transport, count) {
  const problems = [];
  if (r.error) problems.push(r.error);
  const e = r.echoes;
  if (!e) {
    problems.push("no messages exchanged");
  } else {
    for (const side of ["a", "b"]) {
      const echoed = e[`${side}_echoed`] ?? 0;
      if (echoed !== count || !e[`${side}_in_order`]) {
        problems.push(`${side}'s pings: ${echoed}/${count} echoed, in order: ${!!e[`${side}_in_order`]}`);
      }
    }
  }
  for (const side of ["a", "b"]) {
    const s = r.selected && r.selected[side];
    if (!s || !s.local) {
      problems.push(`${side}: no selected candidate pair in getStats`);
      continue;
    }
    if (s.local.candidateType !== "relay") problems.push(`${side}: local candidate is ${s.local.candidateType}, not relay`);
    if (s.remote && s.remote.candidateType && s.remote.candidateType !== "relay") {
      problems.push(`${side}: remote candidate is ${s.remote.candidateType}, not relay`);
    }
    if (s.local.relayProtocol !== undefined && s.local.relayProtocol !== transport) {
      problems.push(`${side}: relayProtocol ${s.local.relayProtocol}, expected ${transport}`);
    }
  }
  return problems;
}

const CHROMIUM_ARGS = [
  "--ignore-certificate-errors",
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
  "--disable-features=" +
    [
      "WebRtcHideLocalIpsWithMdns",
      // Chromium keeps only the last --disable-features, so this list
      // replaces playwright's: repeat the ones that keep it off the network.
      "MediaRouter",
      "OptimizationHints",
      "NetworkTimeServiceQuerying",
      "AimEnabled",
      "PreconnectToSearch",
    ].join(","),
];

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { chromium } = loadPlaywright(opts.npmPrefix);
  const started = Date.now();
  const out = { url: opts.url, transport: opts.transport, count: opts.count };
  // A hard stop in case the browser hangs somewhere playwright does not time out.
  const hardStop = setTimeout(() => {
    out.ok = false;
    out.problems = [`no result within ${opts.timeout + 15} s`];
    console.log("RESULT " + JSON.stringify(out));
    process.exit(1);
  }, (opts.timeout + 15) * 1000);
  hardStop.unref();

  // For debugging: UTURN_CHROMIUM_EXTRA_ARGS="--enable-logging=stderr
  // --vmodule=turn_port=4" with DEBUG=pw:browser shows libwebrtc's TURN log.
  const extraArgs = (process.env.UTURN_CHROMIUM_EXTRA_ARGS || "").split(" ").filter(Boolean);
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: opts.chromium,
      headless: true,
      timeout: 20000,
      args: [...CHROMIUM_ARGS, ...extraArgs],
    });
    out.browser = browser.version();
    const page = await browser.newPage();
    const consoleLines = [];
    page.on("console", (m) => consoleLines.push(m.text()));
    const r = await page.evaluate(relayInPage, {
      iceServer: { urls: opts.url, username: opts.username, credential: opts.credential },
      count: opts.count,
      timeoutMs: opts.timeout * 1000,
    });
    Object.assign(out, r);
    if (consoleLines.length) out.console = consoleLines.slice(-20);
  } catch (e) {
    out.error = String(e && e.message ? e.message : e).split("\n")[0];
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
  out.total_ms = Date.now() - started;
  const problems = verdict(out, opts.transport, opts.count);
  out.ok = problems.length === 0;
  out.problems = problems;
  console.log("RESULT " + JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}

main();
