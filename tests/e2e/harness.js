// The end-to-end harness: the real debug gateway binary on free ports with an embedded store
// in a temporary directory, a tiny upstream that echoes what it received, an organization and
// its admin made with the binary's CLI, and headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core. Everything started here is stopped by `stop()`.
"use strict";

const { spawn, spawnSync } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { FakeGithub } = require("./fake-github");

const ROOT = path.resolve(__dirname, "..", "..");
const BINARY = process.env.XGW_BIN || path.join(ROOT, "target", "debug", "xelon-gateway");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SCREENSHOTS = path.join(__dirname, "screenshots");
// Required on our machines: without the background-networking flags Chromium floods the
// closed network. Playwright adds --headless and a fresh empty --user-data-dir itself.
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const ADMIN_PASSWORD = "Admin-password-123";

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The platform stand-in: answers every request with what it received, as JSON. */
function startUpstream(port) {
  const server = http.createServer((req, res) => {
    const body = JSON.stringify({ method: req.method, path: req.url, headers: req.headers });
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

function cli(config, args, stdin) {
  const out = spawnSync(BINARY, ["--config", config, ...args], {
    input: stdin || "",
    encoding: "utf8",
    env: { ...process.env, RUST_LOG: "warn" },
  });
  if (out.status !== 0) {
    throw new Error(`xelon-gateway ${args.join(" ")} failed: ${out.stderr}`);
  }
  return JSON.parse(out.stdout.trim().split("\n").pop());
}

class Gateway {
  constructor() {
    this.children = [];
    this.log = "";
  }

  async start() {
    if (!fs.existsSync(BINARY)) {
      throw new Error(`${BINARY} is missing: run \`cargo build\` first (scripts/test does).`);
    }
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: install Debian's chromium (scripts/test does: scripts/need-packages chromium:chromium).`);
    }
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "xgw-e2e-"));
    const [listen, internal, upstream] = [await freePort(), await freePort(), await freePort()];
    this.upstream = await startUpstream(upstream);
    this.base = `http://127.0.0.1:${listen}`;
    // Quick Login with GitHub against a local stand-in; the account it signs in as.
    this.github = await new FakeGithub({
      clientId: "e2e-github-client",
      clientSecret: crypto.randomBytes(16).toString("hex"),
      account: { id: 4242, login: "ada-gh", name: "Ada on GitHub", email: "ada.gh@example.com" },
    }).start();
    this.config = path.join(this.dir, "gateway.toml");
    fs.writeFileSync(this.config, [
      "[server]",
      `listen = "127.0.0.1:${listen}"`,
      `internal_listen = "127.0.0.1:${internal}"`,
      "threads = 2",
      `public_url = "${this.base}"`,
      "[upstream]",
      `url = "http://127.0.0.1:${upstream}"`,
      "[store]",
      `url = "embedded:${path.join(this.dir, "gateway.redb")}"`,
      "[session]",
      "cookie_secure = false",
      "[login]",
      "max_failures_per_ip = 1000",
      "[sms]",
      'provider = "log"',
      "[oauth.github]",
      `client_id = "${this.github.clientId}"`,
      `client_secret = "${this.github.clientSecret}"`,
      `authorize_url = "${this.github.base}/login/oauth/authorize"`,
      `token_url = "${this.github.base}/login/oauth/access_token"`,
      `api_url = "${this.github.base}/api"`,
      "",
    ].join("\n"));
    // The CLI needs the store to itself (redb: one process per file), so before `serve`.
    this.org = cli(this.config, ["org", "create", "--name", "Acme Robotics"]);
    this.admin = cli(this.config, [
      "user", "create", "--org", this.org.id, "--email", "ada@acme.example", "--first-name", "Ada",
      "--last-name", "Lovelace", "--admin", "--permission", "allowManageServiceTokens", "--password-stdin",
    ], ADMIN_PASSWORD);
    this.admin.password = ADMIN_PASSWORD;
    const child = spawn(BINARY, ["--config", this.config, "serve"], {
      env: { ...process.env, RUST_LOG: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", (d) => { this.log += d; });
    child.stderr.on("data", (d) => { this.log += d; });
    this.children.push(child);
    const deadline = Date.now() + 30000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the gateway exited:\n${this.log}`);
      try {
        const resp = await fetch(`http://127.0.0.1:${internal}/readyz`);
        if (resp.ok) break;
      } catch (_) { /* not yet */ }
      if (Date.now() > deadline) throw new Error(`the gateway did not get ready:\n${this.log}`);
      await sleep(100);
    }
    this.adminApi = await this.login(this.admin.email, ADMIN_PASSWORD);
  }

  url(p) {
    return `${this.base}${p}`;
  }

  /** A JSON login from a script: `{cookie, csrf, call(method, path, body)}`. */
  async login(email, password, userAgent = "e2e-script/1.0") {
    const resp = await fetch(this.url("/auth/login"), {
      method: "POST",
      headers: { "Content-Type": "application/json", "User-Agent": userAgent },
      body: JSON.stringify({ email, password }),
    });
    const data = await resp.json();
    if (!resp.ok || !data.csrf_token) throw new Error(`login of ${email}: ${resp.status} ${JSON.stringify(data)}`);
    const cookie = resp.headers.get("set-cookie").split(";")[0];
    const call = async (method, p, body) => {
      const r = await fetch(this.url(p), {
        method,
        headers: {
          Cookie: cookie, "X-CSRF-Token": data.csrf_token, Accept: "application/json",
          "User-Agent": userAgent, ...(body ? { "Content-Type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        redirect: "manual",
      });
      let json = null;
      try { json = await r.json(); } catch (_) { /* no body */ }
      return { status: r.status, data: json };
    };
    return { cookie, csrf: data.csrf_token, call };
  }

  /** A new member of the organization (made by the admin through the API). */
  async createUser(fields) {
    const n = crypto.randomBytes(4).toString("hex");
    const body = {
      first_name: "Grace", last_name: "Hopper", email: `user-${n}@acme.example`,
      password: `Member-password-${n}`, ...fields,
    };
    const result = await this.adminApi.call("POST", `/auth/api/v1/orgs/${this.org.id}/users`, body);
    if (result.status !== 201) throw new Error(`create user: ${result.status} ${JSON.stringify(result.data)}`);
    return { ...result.data, password: body.password };
  }

  /**
   * The SMS messages to `phone` so far (`sms.provider = "log"` writes each to the gateway's log
   * instead of sending it): their 6-digit codes, oldest first.
   */
  smsCodes(phone) {
    // eslint-disable-next-line no-control-regex
    const log = this.log.replace(/\x1b\[[0-9;]*m/g, "");
    return log.split("\n")
      .filter((line) => line.includes("SMS NOT SENT") && line.includes(phone))
      .map((line) => (line.match(/\b(\d{6})\b/) || [])[1])
      .filter(Boolean);
  }

  /** Waits for the SMS after the first `seen` to `phone`; its code. */
  async nextSmsCode(phone, seen) {
    const deadline = Date.now() + 10000;
    for (;;) {
      const codes = this.smsCodes(phone);
      if (codes.length > seen) return codes[codes.length - 1];
      if (Date.now() > deadline) throw new Error(`no SMS to ${phone} in the gateway log:\n${this.log.slice(-2000)}`);
      await sleep(50);
    }
  }

  async setPolicy(twoFactor) {
    const r = await this.adminApi.call("PUT", `/auth/api/v1/orgs/${this.org.id}/settings`, { two_factor: twoFactor });
    if (r.status !== 200) throw new Error(`settings: ${r.status}`);
  }

  async stop() {
    for (const child of this.children) {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => { child.once("exit", r); setTimeout(r, 5000); });
      }
    }
    if (this.upstream) this.upstream.close();
    if (this.github) this.github.stop();
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function launchChromium() {
  const { chromium } = require("playwright-core");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

// --- RFC 6238 TOTP (HMAC-SHA1, 6 digits, 30 s) --------------------------------------------

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of text.replace(/=+$/, "").replace(/\s/g, "").toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error(`not base32: ${c}`);
    bits += v.toString(2).padStart(5, "0");
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

function totp(secret, step = Math.floor(Date.now() / 1000 / 30)) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return String(value).padStart(6, "0");
}

module.exports = { Gateway, launchChromium, totp, base32Decode, SCREENSHOTS, sleep };
