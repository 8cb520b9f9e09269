// The web UI end to end: headless Chromium against the real gateway (see harness.js). Each
// test saves a screenshot in tests/e2e/screenshots/.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const axe = require("axe-core");
const { Gateway, launchChromium, totp, SCREENSHOTS } = require("./harness");

const gw = new Gateway();
let browser;
const contexts = [];

before(async () => {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  await gw.start();
  browser = await launchChromium();
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  if (browser) await browser.close();
  await gw.stop();
});

/**
 * A fresh browser (own cookies) on one page. Fails the test on a script error or a
 * Content-Security-Policy violation on any page it visits.
 */
async function newPage(t, { width = 1440, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, acceptDownloads: true });
  contexts.push(context);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: gw.base });
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push(`script error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) {
      page.problems.push(`CSP: ${m.text()}`);
    }
  });
  t.after(() => assert.deepEqual(page.problems, [], "no script errors or CSP violations"));
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** axe-core finds no serious or critical violation on the page as it is now. */
async function accessible(page, label) {
  // page.evaluate runs through the DevTools protocol, not as an inline script: the page's CSP
  // stays in force.
  if (!(await page.evaluate(() => typeof window.axe === "object"))) {
    await page.evaluate(axe.source);
  }
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  assert.deepEqual(violations, [], `${label}: axe-core serious/critical violations`);
}

/** Nothing wider than the viewport (works at 375 px). */
async function fitsWidth(page, label) {
  const { scroll, width, wide } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
    // What sticks out, to say what to fix.
    wide: [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
      .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`)
      .slice(0, 5),
  }));
  assert.ok(scroll <= width, `${label}: the page is ${scroll}px wide in a ${width}px window: ${wide.join(", ")}`);
}

async function uiLogin(page, email, password, next = "/auth/account") {
  await page.goto(gw.url(`/auth/login?next=${encodeURIComponent(next)}`));
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

/** Signs out through the avatar menu (top right). */
async function signOut(page) {
  await page.getByRole("button", { name: /user menu/ }).click();
  await page.getByRole("menuitem", { name: "Sign out" }).click();
  await page.waitForURL(/\/auth\/login/);
}

async function openAccount(page, user) {
  await uiLogin(page, user.email, user.password);
  await page.waitForURL(/\/auth\/account$/);
  await page.getByRole("heading", { name: "Account Information" }).waitFor();
}

// --- tests ----------------------------------------------------------------------------------

test("login: a page without a session goes to the login page, wrong password, too many attempts, then in", async (t) => {
  const page = await newPage(t);
  const user = await gw.createUser({ first_name: "Linus" });
  await page.goto(gw.url("/auth/account"));
  await page.waitForURL(/\/auth\/login\?next=%2Fauth%2Faccount$/);
  await accessible(page, "login page");

  await page.getByLabel("Email").fill(user.email);
  await page.getByLabel("Password").fill("wrong password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "The email or password is wrong." }).waitFor();
  await shot(page, "01-login-wrong-password");

  await page.getByLabel("Password").fill(user.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/auth\/account$/);
  await page.getByRole("heading", { name: "Profile & Security" }).waitFor();

  // A second account gets locked after five wrong passwords, and the page says for how long.
  const locked = await gw.createUser({ first_name: "Locked" });
  const page2 = await newPage(t, { width: 375, height: 740 });
  await page2.goto(gw.url("/auth/login"));
  await page2.getByLabel("Email").fill(locked.email);
  for (let i = 0; i < 6; i += 1) {
    await page2.getByLabel("Password").fill(`wrong-${i}`);
    await page2.getByRole("button", { name: "Sign in", exact: true }).click();
    await page2.getByRole("alert").filter({ hasText: /wrong|Try again/ }).waitFor();
  }
  await page2.getByRole("alert").filter({ hasText: /Too many failed attempts\. Try again in \d+ (seconds|minutes)\./ }).waitFor();
  await fitsWidth(page2, "login page at 375 px");
  await shot(page2, "02-login-too-many-attempts-375");

  // The Quick Login error codes the provider round trip comes back with.
  await page2.goto(gw.url("/auth/login?error=oauth_not_linked"));
  await page2.getByRole("alert").filter({ hasText: "not connected to any Xelon HQ user" }).waitFor();
});

test("My Account: reached from the avatar menu; Account Information shows each field's error, then saves", async (t) => {
  const page = await newPage(t);
  const user = await gw.createUser({ first_name: "Edith", last_name: "Clarke" });
  await uiLogin(page, user.email, user.password, "/");
  await page.waitForURL(/127\.0\.0\.1:\d+\/$/);
  // The platform page is the upstream's; the menu lives on our pages. Open it from the org page
  // of an admin below; here, go to a page of ours and use the menu to reach My Account.
  await page.goto(gw.url("/auth/org"));
  // The menu works from the keyboard: arrow keys in, Escape out, focus back on the button.
  await page.getByRole("button", { name: /user menu/ }).focus();
  await page.keyboard.press("ArrowDown");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "My Account");
  await page.keyboard.press("ArrowDown");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Sign out");
  await page.keyboard.press("Escape");
  assert.equal(await page.evaluate(() => document.activeElement.id), "avatar-button");
  assert.equal(await page.locator("#menu").isHidden(), true);
  await page.getByRole("button", { name: /user menu/ }).click();
  await page.getByRole("menuitem", { name: "My Account" }).click();
  await page.waitForURL(/\/auth\/account$/);
  await page.getByRole("heading", { name: "Account Information" }).waitFor();
  await accessible(page, "My Account");

  await page.getByRole("button", { name: "Edit", exact: true }).click();
  await page.getByLabel("First Name").fill("");
  await page.getByLabel("Email").fill("not-an-email");
  await page.getByLabel("Mobile Phone").fill("0791234567");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#email-error").filter({ hasText: /valid email/ }).waitFor();
  assert.match(await page.locator("#first_name-error").textContent(), /\S/);
  assert.match(await page.locator("#mobile_phone-error").textContent(), /\S/);
  assert.equal(await page.getByLabel("Email").getAttribute("aria-invalid"), "true");
  await accessible(page, "My Account with field errors");
  await shot(page, "03-profile-field-errors");

  await page.getByLabel("First Name").fill("Edith");
  await page.getByLabel("Email").fill(`edith-${Date.now()}@acme.example`);
  await page.getByLabel("Job Title").fill("Electrical Engineer");
  await page.getByLabel("Mobile Phone").fill("+41791234567");
  await page.getByLabel("Business Phone").fill("+41441234567");
  await page.getByLabel("Timezone").fill("Europe/Zurich");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("status").filter({ hasText: "Your profile was saved." }).waitFor();
  assert.equal(await page.locator("#view-job_title").textContent(), "Electrical Engineer");
  assert.equal(await page.locator("#view-timezone").textContent(), "Europe/Zurich");
  // The timezone list is searchable: it is the browser's IANA list.
  assert.ok(await page.locator("#timezones option[value='America/New_York']").count() === 1);
  await shot(page, "04-profile-saved");
});

test("avatar: the size is shown before upload, the upload replaces the initials, remove brings them back", async (t) => {
  const page = await newPage(t);
  const user = await gw.createUser({ first_name: "Hedy", last_name: "Lamarr" });
  await openAccount(page, user);
  const png = await page.screenshot({ clip: { x: 0, y: 0, width: 120, height: 120 } });
  await page.getByLabel(/Choose an image/).setInputFiles({ name: "hedy.png", mimeType: "image/png", buffer: png });
  await page.locator("#avatar-file-info").filter({ hasText: /hedy\.png — [\d.]+ (KB|bytes)/ }).waitFor();
  await shot(page, "05-avatar-before-upload");
  await page.getByRole("button", { name: "Upload" }).click();
  await page.getByRole("status").filter({ hasText: "Your avatar was updated." }).waitFor();
  const img = page.locator("#avatar-large img");
  await img.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector("#avatar-large img");
    return i && i.complete && i.naturalWidth > 0;
  });
  await shot(page, "06-avatar-uploaded");

  // A file that is not an image is refused before any upload.
  await page.getByLabel(/Choose an image/).setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello") });
  await page.getByRole("status").filter({ hasText: "Only PNG, JPEG and WebP" }).waitFor();

  await page.getByRole("button", { name: "Remove" }).click();
  await page.getByRole("status").filter({ hasText: "Your avatar was removed." }).waitFor();
  await page.locator("#avatar-large span.avatar").waitFor();
});

test("password: the live checklist, a wrong current password, then the change signs out the other devices", async (t) => {
  const page = await newPage(t);
  const user = await gw.createUser({ first_name: "Alan" });
  const otherDevice = await gw.login(user.email, user.password);
  await openAccount(page, user);

  await page.getByLabel("New password", { exact: true }).fill("short");
  assert.equal(await page.locator("#password-rules li.met").count(), 3); // lower case, not email, not current
  await page.getByLabel("Current password").fill("not my password");
  await page.getByLabel("New password", { exact: true }).fill("Correct-Horse-42-battery");
  assert.equal(await page.locator("#password-rules li:not(.met)").count(), 0);
  await page.getByRole("button", { name: "Change Password" }).click();
  await page.locator("#current-password-error").filter({ hasText: "The current password is wrong." }).waitFor();
  await shot(page, "07-password-checklist");

  await page.getByLabel("Current password").fill(user.password);
  await page.getByRole("button", { name: "Change Password" }).click();
  await page.getByRole("status").filter({ hasText: "your other devices were signed out" }).waitFor();
  await shot(page, "08-password-changed");
  assert.equal((await otherDevice.call("GET", "/auth/api/v1/me")).status, 401, "the other device's session ended");
  // This browser stays signed in.
  await page.reload();
  await page.getByRole("heading", { name: "Account Information" }).waitFor();
});

test("two-factor: enrol the authenticator app (codes computed here), backup codes, then log in with a code", async (t) => {
  await gw.setPolicy("optional");
  const page = await newPage(t);
  const user = await gw.createUser({ first_name: "Katherine", last_name: "Johnson" });
  await openAccount(page, user);
  await page.getByRole("heading", { name: "Two-factor authentication & Security" }).waitFor();
  await page.getByRole("button", { name: "Authenticator App" }).click();
  await page.getByRole("img", { name: "QR code for your authenticator app" }).waitFor();
  const secret = (await page.locator("#setup-key").textContent()).trim();
  assert.match(secret, /^[A-Z2-7]+=*$/);
  await shot(page, "09-totp-qr");

  await page.getByLabel("Enter the 6-digit code").fill("000000" === totp(secret) ? "111111" : "000000");
  await page.getByRole("button", { name: "Verify" }).click();
  await page.getByRole("alert").filter({ hasText: "That code is wrong or has expired." }).waitFor();
  await page.getByLabel("Enter the 6-digit code").fill(totp(secret));
  await page.getByRole("button", { name: "Verify" }).click();
  await page.getByRole("heading", { name: "Your backup codes" }).waitFor();
  const codes = await page.locator("#backup-list li").allTextContents();
  assert.equal(codes.length, 10);
  await accessible(page, "backup codes");
  await shot(page, "10-backup-codes");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download codes" }).click(),
  ]);
  const text = fs.readFileSync(await download.path(), "utf8");
  assert.ok(codes.every((c) => text.includes(c)), "the download holds every code");
  await page.getByRole("button", { name: "Copy codes" }).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), codes.join("\n"));
  await page.getByRole("button", { name: "Done" }).click();
  await page.locator("#tfa-remaining").filter({ hasText: "Backup codes remaining: 10" }).waitFor();

  // Sign out from the avatar menu and back in: the code step. The code of the next time step
  // is still accepted (±1 step) and is newer than the one used to enrol (replay protection).
  await signOut(page);
  await uiLogin(page, user.email, user.password);
  await page.getByLabel("Authentication code").waitFor();
  await accessible(page, "login code step");
  await shot(page, "11-login-code-step");
  await page.getByLabel("Authentication code").fill(totp(secret, Math.floor(Date.now() / 30000) + 1));
  await page.getByRole("button", { name: "Verify" }).click();
  await page.waitForURL(/\/auth\/account$/);

  // Disabling needs a code: a backup code does it.
  await page.getByLabel(/Code from your authenticator app or SMS, or a backup code/).fill(codes[0]);
  await page.getByRole("button", { name: "Disable two-factor authentication" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Disable" }).click();
  await page.getByRole("button", { name: "Authenticator App" }).waitFor();
});

test("backup codes: log in with one, then regenerate them with a current code", async (t) => {
  await gw.setPolicy("optional");
  const user = await gw.createUser({ first_name: "Annie", last_name: "Easley" });
  const api = await gw.login(user.email, user.password);
  const { secret } = (await api.call("POST", "/auth/api/v1/me/2fa/totp", {})).data;
  const step = Math.floor(Date.now() / 30000);
  const enrolled = await api.call("POST", "/auth/api/v1/me/2fa/totp/verify", { code: totp(secret, step) });
  const codes = enrolled.data.backup_codes;
  const page = await newPage(t);
  await uiLogin(page, user.email, user.password);
  await page.getByRole("button", { name: "Use a backup code" }).click();
  await page.getByLabel("Backup code").fill(codes[1]);
  await page.getByRole("button", { name: "Verify" }).click();
  await page.waitForURL(/\/auth\/account$/);
  await page.locator("#tfa-remaining").filter({ hasText: "Backup codes remaining: 9" }).waitFor();

  // A backup code is not enough to regenerate; a code from the app is.
  const proof = page.getByLabel(/Code from your authenticator app or SMS, or a backup code/);
  await proof.fill(codes[2]);
  await page.getByRole("button", { name: "Regenerate backup codes" }).click();
  await page.getByRole("alert").filter({ hasText: "Enter the 6-digit code" }).waitFor();
  await proof.fill(totp(secret, step + 1));
  await page.getByRole("button", { name: "Regenerate backup codes" }).click();
  await page.getByRole("heading", { name: "Your backup codes" }).waitFor();
  const fresh = await page.locator("#backup-list li").allTextContents();
  assert.equal(fresh.length, 10);
  assert.ok(!fresh.includes(codes[3]), "new codes");
  await page.getByRole("button", { name: "Done" }).click();
  await page.locator("#tfa-remaining").filter({ hasText: "Backup codes remaining: 10" }).waitFor();
});

test("two-factor by SMS: enrol with the code sent to the phone, then log in with a resent code", async (t) => {
  await gw.setPolicy("optional");
  const page = await newPage(t);
  const user = await gw.createUser({ first_name: "Margaret", last_name: "Hamilton" });
  const phone = `+4179${String(Date.now()).slice(-7)}`;
  await openAccount(page, user);
  await page.getByRole("button", { name: "SMS", exact: true }).click();
  await page.getByLabel("Phone number").fill(phone);
  await page.getByRole("button", { name: "Send code" }).click();
  const enrolCode = await gw.nextSmsCode(phone, 0);
  await page.getByLabel("Enter the 6-digit code").fill(enrolCode);
  await page.getByRole("button", { name: "Verify" }).click();
  await page.getByRole("heading", { name: "Your backup codes" }).waitFor();
  await page.getByRole("button", { name: "Done" }).click();
  await page.locator("#tfa-summary").filter({ hasText: "SMS to" }).waitFor();

  await signOut(page);
  await uiLogin(page, user.email, user.password);
  await page.getByText("We sent a 6-digit code to your phone.").waitFor();
  await gw.nextSmsCode(phone, 1); // sent with the password step
  await page.getByRole("button", { name: "Resend code" }).click();
  const resent = await gw.nextSmsCode(phone, 2);
  await shot(page, "11b-login-sms-step");
  await page.getByLabel("Authentication code").fill(resent);
  await page.getByRole("button", { name: "Verify" }).click();
  await page.waitForURL(/\/auth\/account$/);
  await page.locator("#tfa-summary").filter({ hasText: "SMS to" }).waitFor();

  // A fourth SMS within 15 minutes is refused, and the page says how long to wait.
  await page.getByRole("button", { name: "Send me a code" }).click();
  await page.getByRole("alert").filter({ hasText: /Too many attempts\. Try again in \d+ (seconds|minutes)\./ }).waitFor();
});

test("Quick Login: connect GitHub (local stand-in), sign in with it, disconnect, then it is not linked", async (t) => {
  const page = await newPage(t);
  const user = await gw.createUser({ first_name: "Grace", last_name: "Murray" });
  await openAccount(page, user);
  const row = page.locator(".provider-row[data-provider=github]");
  await row.getByText("Not connected").waitFor();
  await row.getByRole("button", { name: "Connect GitHub" }).click();
  // To the provider, which approves at once, and back.
  await page.waitForURL(/\/auth\/account$/);
  await page.getByRole("status").filter({ hasText: "GitHub is now connected." }).waitFor();
  await row.getByText(/Connected as ada\.gh@example\.com/).waitFor();
  await accessible(page, "Quick Login connected");
  await shot(page, "12a-quick-login-connected");

  // With an authenticator app (enrolled through the API here), signing in with GitHub still
  // asks for the code.
  await gw.setPolicy("optional");
  const api = await gw.login(user.email, user.password);
  const { secret } = (await api.call("POST", "/auth/api/v1/me/2fa/totp", {})).data;
  assert.equal((await api.call("POST", "/auth/api/v1/me/2fa/totp/verify", { code: totp(secret) })).status, 200);

  // Sign out and back in with GitHub.
  await signOut(page);
  await page.goto(gw.url("/auth/login?next=%2Fauth%2Faccount"));
  await page.getByRole("link", { name: "Sign in with GitHub" }).click();
  await page.waitForURL(/\/auth\/login\?step=2fa/);
  await page.getByLabel("Authentication code").fill(totp(secret, Math.floor(Date.now() / 30000) + 1));
  await page.getByRole("button", { name: "Verify" }).click();
  await page.waitForURL(/\/auth\/account$/);
  await page.locator("#view-email").filter({ hasText: user.email }).waitFor();

  await row.getByRole("button", { name: "Disconnect GitHub" }).click();
  await page.getByRole("dialog", { name: "Disconnect GitHub?" }).getByRole("button", { name: "Disconnect" }).click();
  await page.getByRole("status").filter({ hasText: "GitHub was disconnected." }).waitFor();
  await row.getByText("Not connected").waitFor();

  // Now the GitHub account belongs to nobody here.
  await signOut(page);
  await page.getByRole("link", { name: "Sign in with GitHub" }).click();
  await page.getByRole("alert").filter({ hasText: "not connected to any Xelon HQ user" }).waitFor();
  await shot(page, "12b-login-oauth-not-linked");
});

test("service tokens: create in the New Service Token dialog, copy, use it, delete it", async (t) => {
  const page = await newPage(t);
  await openAccount(page, gw.admin);
  await page.getByRole("heading", { name: "Service Tokens" }).waitFor();

  // Keyboard: the dialog takes focus, keeps it, and gives it back.
  await page.getByRole("button", { name: "Add Service" }).focus();
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog", { name: "New Service Token" });
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "token-name");
  for (let i = 0; i < 12; i += 1) await page.keyboard.press("Tab");
  assert.ok(await page.evaluate(() => document.getElementById("token-dialog").contains(document.activeElement)), "focus stays in the dialog");
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Add Service");

  await page.getByRole("button", { name: "Add Service" }).click();
  await dialog.getByLabel("Service Name").fill("CI/CD Pipeline");
  assert.equal(await dialog.getByLabel("Related Organization").inputValue(), gw.org.id);
  await dialog.getByRole("button", { name: "Add current IP" }).click();
  await page.waitForFunction(() => document.getElementById("token-ip").value === "127.0.0.1");
  await accessible(page, "New Service Token dialog");
  await shot(page, "12-new-service-token");
  await dialog.getByRole("button", { name: "Create" }).click();
  await page.getByText("The token value is shown only once.").waitFor();
  await page.getByRole("button", { name: "Copy Token" }).click();
  await page.getByRole("status").filter({ hasText: "Token copied" }).waitFor();
  const token = await page.evaluate(() => navigator.clipboard.readText());
  assert.match(token, /^xgw_[0-9A-Za-z]{50}$/);
  await page.getByRole("button", { name: "Copy Client Id" }).click();
  const clientId = await page.evaluate(() => navigator.clipboard.readText());
  assert.match(clientId, /^cli_/);
  await shot(page, "13-token-created");
  // Never in storage or in the URL.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + location.href);
  assert.ok(!stored.includes(token));
  await page.getByRole("button", { name: "Done" }).click();
  await page.locator("#tokens-body .token-name").filter({ hasText: "CI/CD Pipeline" }).waitFor();
  await shot(page, "13b-service-tokens-card");
  assert.equal(await page.getByRole("cell", { name: "Acme Robotics" }).count(), 1);

  // A script uses it (Authorization: Bearer) through the gateway.
  const use = () => fetch(gw.url("/platform/ping"), { headers: { Authorization: `Bearer ${token}` } });
  const ok = await use();
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).headers["x-auth-method"], "service_token");

  await page.getByRole("button", { name: "Delete Service CI/CD Pipeline" }).click();
  const confirm = page.getByRole("dialog", { name: 'Delete Service "CI/CD Pipeline"?' });
  await confirm.getByText("This is irreversible").waitFor();
  await shot(page, "14-delete-service-confirm");
  await confirm.getByRole("button", { name: "Delete Service" }).click();
  await page.getByRole("status").filter({ hasText: '"CI/CD Pipeline" was deleted.' }).waitFor();
  assert.equal((await use()).status, 401, "the deleted token is refused");
});

test("Manage My Organization: session duration, expire a session, it moves to the expired table; 2FA policy; members", async (t) => {
  const page = await newPage(t);
  const member = await gw.createUser({ first_name: "Barbara", last_name: "Liskov" });
  const device = await gw.login(member.email, member.password, "LiskovPhone/2.0 (e2e)");
  assert.equal((await device.call("GET", "/auth/api/v1/me")).status, 200);

  await openAccount(page, gw.admin);
  await page.getByRole("navigation", { name: "Sidebar" }).getByRole("link", { name: "Manage My Organization" }).click();
  await page.waitForURL(/\/auth\/org$/);
  await page.getByRole("tab", { name: "Active sessions" }).click();
  await page.getByRole("heading", { name: "Session Duration" }).waitFor();

  await page.waitForFunction(() => !document.getElementById("session-duration").disabled);
  await page.getByLabel("Session Duration").selectOption("14");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("status").filter({ hasText: "Sessions now last 14 days" }).waitFor();

  const row = page.locator("#active-body tr").filter({ hasText: "LiskovPhone/2.0" });
  await row.waitFor();
  assert.match(await row.textContent(), /Barbara Liskov/);
  await accessible(page, "Manage My Organization");
  await shot(page, "15-active-sessions");
  await row.getByRole("button", { name: /Expire now/ }).click();
  const confirm = page.getByRole("dialog", { name: "Expire this session now?" });
  await confirm.getByRole("button", { name: "Expire now" }).click();
  await page.getByRole("status").filter({ hasText: "The session of Barbara Liskov was expired." }).waitFor();
  const expired = page.locator("#expired-body tr").filter({ hasText: "LiskovPhone/2.0" });
  await expired.filter({ hasText: "Expired by an administrator" }).waitFor();
  assert.equal(await row.count(), 0, "no longer in the active table");
  assert.equal((await device.call("GET", "/auth/api/v1/me")).status, 401, "the device is logged out");
  await shot(page, "16-session-expired");

  await page.reload();
  await page.waitForFunction(() => !document.getElementById("session-duration").disabled);
  assert.equal(await page.getByLabel("Session Duration").inputValue(), "14");

  // The two-factor policy and the members, through the tabs (keyboard: arrow keys).
  await page.getByRole("tab", { name: "Active sessions" }).focus();
  await page.keyboard.press("ArrowRight");
  await page.getByRole("radio", { name: /Optional/ }).check();
  await page.getByRole("tabpanel").getByRole("button", { name: "Save" }).click();
  await page.getByRole("status").filter({ hasText: "now optional" }).waitFor();
  await page.getByRole("tab", { name: "Members" }).click();
  await page.getByRole("cell", { name: member.email }).waitFor();
  await accessible(page, "Members");
  await shot(page, "17-members");
});

test("error states: a request that fails shows what failed instead of an empty section", async (t) => {
  const page = await newPage(t);
  await openAccount(page, gw.admin);
  // From now on these calls fail as if the network dropped them.
  for (const pattern of ["**/auth/api/v1/service-tokens", "**/auth/api/v1/me/identities", "**/auth/api/v1/me/2fa", "**/auth/api/v1/orgs/*/sessions*"]) {
    await page.route(pattern, (route) => route.abort("connectionreset"));
  }
  await page.reload();
  await page.getByRole("alert").filter({ hasText: "Service tokens could not be loaded" }).waitFor();
  await page.getByRole("alert").filter({ hasText: "Your Quick Login connections could not be loaded" }).waitFor();
  await page.getByRole("alert").filter({ hasText: "Two-factor settings could not be loaded" }).waitFor();
  await shot(page, "20-account-load-errors");
  await page.goto(gw.url("/auth/org"));
  await page.getByRole("alert").filter({ hasText: "The active sessions could not be loaded" }).waitFor();
  await page.getByRole("alert").filter({ hasText: "The expired sessions could not be loaded" }).waitFor();
  // And a change that cannot be sent says so.
  await page.goto(gw.url("/auth/account"));
  await page.route("**/auth/api/v1/me", (route) => (route.request().method() === "PATCH" ? route.abort("connectionreset") : route.continue()));
  await page.getByRole("button", { name: "Edit", exact: true }).click();
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#info-error").filter({ hasText: "could not be reached" }).waitFor();
});

test("narrow screens: My Account and Manage My Organization at 375 px pass axe and fit", async (t) => {
  const page = await newPage(t, { width: 375, height: 812 });
  await openAccount(page, gw.admin);
  await page.locator("#tokens-card").waitFor();
  await fitsWidth(page, "My Account at 375 px");
  await accessible(page, "My Account at 375 px");
  await shot(page, "18-account-375");
  await page.goto(gw.url("/auth/org"));
  await page.locator("#active-body tr").first().waitFor();
  await fitsWidth(page, "Manage My Organization at 375 px");
  await accessible(page, "Manage My Organization at 375 px");
  await shot(page, "19-org-375");

  // A member who is not an admin: no organization page link, no Service Tokens card.
  const member = await gw.createUser({ first_name: "Plain" });
  const memberPage = await newPage(t);
  await openAccount(memberPage, member);
  await memberPage.locator(".provider-row[data-provider=github]").waitFor();
  assert.equal(await memberPage.locator("#tokens-card").isHidden(), true);
  assert.equal(await memberPage.getByRole("link", { name: "Manage My Organization" }).count(), 0);
});
