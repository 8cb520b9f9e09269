// A local GitHub stand-in for the Quick Login test: the OAuth app endpoints (authorize, which
// approves at once, and access_token) and the two REST calls Quick Login makes (user, emails).
// It checks what a real GitHub would refuse (client, redirect, state, PKCE) so a test cannot
// pass against a flow GitHub would break.
"use strict";

const crypto = require("node:crypto");
const http = require("node:http");

class FakeGithub {
  constructor({ clientId, clientSecret, account }) {
    this.clientId = clientId;
    this.clientSecret = clientSecret;
    this.account = account; // { id, login, name, email }
    this.codes = new Map();
    this.tokens = new Map();
  }

  start() {
    this.server = http.createServer((req, res) => this.handle(req, res).catch((e) => {
      res.writeHead(500, { "Content-Type": "text/plain" });
      res.end(String(e));
    }));
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => {
      this.base = `http://127.0.0.1:${this.server.address().port}`;
      resolve(this);
    }));
  }

  stop() {
    if (this.server) this.server.close();
  }

  async handle(req, res) {
    const url = new URL(req.url, this.base);
    const json = (status, body) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
      res.end(text);
    };
    if (req.method === "GET" && url.pathname === "/login/oauth/authorize") {
      const p = url.searchParams;
      const redirect = p.get("redirect_uri");
      if (p.get("client_id") !== this.clientId || !redirect || !p.get("state")) {
        return json(400, { error: "bad authorize request", query: url.search });
      }
      const code = crypto.randomBytes(10).toString("hex");
      this.codes.set(code, { redirect, challenge: p.get("code_challenge"), account: this.account });
      const back = new URL(redirect);
      back.searchParams.set("code", code);
      back.searchParams.set("state", p.get("state"));
      res.writeHead(302, { Location: back.toString(), "Content-Length": 0 });
      return res.end();
    }
    if (req.method === "POST" && url.pathname === "/login/oauth/access_token") {
      let body = "";
      for await (const chunk of req) body += chunk;
      const form = new URLSearchParams(body);
      const basic = (req.headers.authorization || "").startsWith("Basic ")
        ? Buffer.from(req.headers.authorization.slice(6), "base64").toString().split(":")
        : [form.get("client_id"), form.get("client_secret")];
      const grant = this.codes.get(form.get("code"));
      this.codes.delete(form.get("code"));
      const pkceOk = !grant || !grant.challenge || crypto.createHash("sha256")
        .update(form.get("code_verifier") || "").digest("base64url") === grant.challenge;
      if (basic[0] !== this.clientId || basic[1] !== this.clientSecret) {
        return json(200, { error: "incorrect_client_credentials" });
      }
      if (!grant || !pkceOk || (form.get("redirect_uri") && form.get("redirect_uri") !== grant.redirect)) {
        return json(200, { error: "bad_verification_code" });
      }
      const token = `gho_${crypto.randomBytes(16).toString("hex")}`;
      this.tokens.set(token, grant.account);
      return json(200, { access_token: token, scope: "read:user,user:email", token_type: "bearer" });
    }
    const auth = (req.headers.authorization || "").replace(/^(Bearer|token) /, "");
    const account = this.tokens.get(auth);
    if (req.method === "GET" && (url.pathname === "/api/user" || url.pathname === "/api/user/emails")) {
      if (!account) return json(401, { message: "Bad credentials" });
      if (url.pathname === "/api/user") {
        return json(200, { id: account.id, login: account.login, name: account.name, email: null, type: "User" });
      }
      return json(200, [{ email: account.email, primary: true, verified: true, visibility: "public" }]);
    }
    return json(404, { message: "Not Found" });
  }
}

module.exports = { FakeGithub };
