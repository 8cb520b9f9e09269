// My Account ("Profile & Security"): avatar, Account Information, Password, Two-factor
// authentication & Security, Quick Login and the Service Tokens card — all over the JSON API.
import {
  $, el, api, explain, say, busy, when, start, renderAvatar, openDialog, confirmAction, copy,
  download, displayName, fillRows, MESSAGES,
} from "/auth/ui/common.js";

const PROFILE_FIELDS = ["first_name", "last_name", "email", "job_title", "mobile_phone", "business_phone", "timezone"];
const MAX_AVATAR_BYTES = 2 * 1024 * 1024;
const AVATAR_TYPES = ["image/png", "image/jpeg", "image/webp"];
const PROVIDERS = { google: "Google", github: "GitHub" };

let me = null;

// --- avatar -------------------------------------------------------------------------------

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(2)} MB`;
}

function setUpAvatar() {
  renderAvatar($("avatar-large"), me, true);
  const status = $("avatar-status");
  let chosen = null;
  $("avatar-file").addEventListener("change", () => {
    const file = $("avatar-file").files[0];
    chosen = null;
    $("avatar-upload").hidden = true;
    $("avatar-preview-row").hidden = true;
    say(status, "");
    if (!file) return;
    $("avatar-file-info").textContent = `${file.name} — ${sizeText(file.size)}`;
    if (!AVATAR_TYPES.includes(file.type)) {
      say(status, `${file.name}: ${MESSAGES.unsupported_media_type}`, "error");
      return;
    }
    if (file.size > MAX_AVATAR_BYTES) {
      say(status, `${file.name} is ${sizeText(file.size)}; ${MESSAGES.body_too_large}`, "error");
      return;
    }
    chosen = file;
    // A data: URL (the page's CSP allows data: images, not blob:).
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      $("avatar-preview").src = reader.result;
      $("avatar-preview-row").hidden = false;
    });
    reader.readAsDataURL(file);
    $("avatar-upload").hidden = false;
  });
  $("avatar-upload").addEventListener("click", () => busy($("avatar-upload"), async () => {
    if (!chosen) return;
    say(status, "Uploading…", "notice");
    const result = await api("PUT", "/auth/api/v1/me/avatar", chosen);
    if (!result.ok) {
      say(status, explain(result), "error");
      return;
    }
    chosen = null;
    $("avatar-file").value = "";
    $("avatar-upload").hidden = true;
    $("avatar-preview-row").hidden = true;
    const version = result.data.etag || Date.now();
    renderAvatar($("avatar-large"), me, true, version);
    renderAvatar($("avatar-slot"), me, false, version);
    say(status, "Your avatar was updated.", "notice");
  }));
  $("avatar-remove").addEventListener("click", () => busy($("avatar-remove"), async () => {
    const result = await api("DELETE", "/auth/api/v1/me/avatar");
    if (!result.ok) {
      say(status, explain(result), "error");
      return;
    }
    const version = Date.now();
    renderAvatar($("avatar-large"), me, true, version);
    renderAvatar($("avatar-slot"), me, false, version);
    say(status, "Your avatar was removed.", "notice");
  }));
}

// --- Account Information ------------------------------------------------------------------

function showProfile() {
  for (const field of PROFILE_FIELDS) {
    $(`view-${field}`).textContent = me[field] || "—";
  }
  $("avatar-name").textContent = displayName(me);
}

function fieldError(field, text) {
  const node = $(`${field}-error`);
  if (!node) return false;
  node.textContent = text || "";
  node.hidden = !text;
  $(field).setAttribute("aria-invalid", text ? "true" : "false");
  return true;
}

function fillTimezones() {
  let zones = [];
  try { zones = Intl.supportedValuesOf("timeZone"); } catch (_) { /* an old browser: free text */ }
  if (!zones.includes("UTC")) zones = ["UTC", ...zones];
  $("timezones").replaceChildren(...zones.map((z) => el("option", { value: z })));
}

function setUpProfile() {
  showProfile();
  fillTimezones();
  const form = $("info-form");
  const status = $("info-status");
  const editing = (on) => {
    form.hidden = !on;
    $("info-view").hidden = on;
    $("info-edit").hidden = on;
  };
  $("info-edit").addEventListener("click", () => {
    for (const field of PROFILE_FIELDS) {
      $(field).value = me[field] || "";
      fieldError(field, "");
    }
    say($("info-error"), "");
    say(status, "");
    editing(true);
    $("first_name").focus();
  });
  $("info-cancel").addEventListener("click", () => {
    editing(false);
    $("info-edit").focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("info-save"), async () => {
      const body = {};
      for (const field of PROFILE_FIELDS) {
        body[field] = $(field).value.trim();
        fieldError(field, "");
      }
      say($("info-error"), "");
      const result = await api("PATCH", "/auth/api/v1/me", body);
      if (result.ok) {
        Object.assign(me, result.data);
        showProfile();
        editing(false);
        say(status, "Your profile was saved.", "notice");
        $("info-edit").focus();
        return;
      }
      let placed = false;
      if (result.data.error === "invalid_profile" && result.data.fields) {
        for (const [field, message] of Object.entries(result.data.fields)) {
          placed = fieldError(field, message) || placed;
        }
      } else if (result.data.error === "email_taken") {
        placed = fieldError("email", MESSAGES.email_taken);
      }
      say($("info-error"), placed ? "Please correct the fields marked below." : explain(result), "error");
      const first = PROFILE_FIELDS.find((f) => !$(`${f}-error`).hidden);
      if (first) $(first).focus();
    });
  });
}

// --- Password -----------------------------------------------------------------------------

function passwordRules(candidate, current) {
  const lower = candidate.toLowerCase();
  return {
    length: [...candidate].length >= 12,
    upper: /\p{Lu}/u.test(candidate),
    lower: /\p{Ll}/u.test(candidate),
    digit: /\p{Nd}/u.test(candidate),
    email: candidate !== "" && lower !== (me.email || "").toLowerCase(),
    current: candidate !== "" && candidate !== current,
  };
}

function setUpPassword() {
  const newPassword = $("new-password");
  const current = $("current-password");
  const check = () => {
    const met = passwordRules(newPassword.value, current.value);
    for (const item of $("password-rules").children) {
      const ok = met[item.dataset.rule];
      item.classList.toggle("met", ok);
      let mark = item.querySelector(".visually-hidden");
      if (!mark) {
        mark = el("span", { className: "visually-hidden" });
        item.append(mark);
      }
      mark.textContent = ok ? " (done)" : " (not yet)";
    }
    return Object.values(met).every(Boolean);
  };
  check();
  newPassword.addEventListener("input", check);
  current.addEventListener("input", check);
  $("password-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("password-submit"), async () => {
      say($("password-error"), "");
      say($("password-status"), "");
      fieldError("current-password", "");
      if (!current.value) {
        fieldError("current-password", "Enter your current password.");
        current.focus();
        return;
      }
      if (!check()) {
        say($("password-error"), "The new password does not meet every rule in the list.", "error");
        newPassword.focus();
        return;
      }
      const result = await api("POST", "/auth/api/v1/me/password", {
        current_password: current.value,
        new_password: newPassword.value,
      });
      if (result.ok) {
        current.value = "";
        newPassword.value = "";
        check();
        say($("password-status"), "Your password was changed. You remain signed in here; your other devices were signed out.", "notice");
        return;
      }
      if (result.data.error === "invalid_current_password") {
        fieldError("current-password", MESSAGES.invalid_current_password);
        current.focus();
      } else if (result.data.error === "weak_password" && Array.isArray(result.data.rules)) {
        say($("password-error"), `The new password needs: ${result.data.rules.join(", ")}.`, "error");
      } else {
        say($("password-error"), explain(result), "error");
      }
    });
  });
}

// --- Two-factor authentication & Security -------------------------------------------------

const TFA_PARTS = ["tfa-off", "tfa-totp", "tfa-sms", "tfa-verify", "tfa-codes", "tfa-on"];
let tfa = null;
let enrolling = null; // "totp" | "sms" while a setup is open

function showTfa(...parts) {
  for (const id of TFA_PARTS) $(id).hidden = !parts.includes(id);
}

function showBackupCodes(codes) {
  $("backup-list").replaceChildren(...codes.map((c) => el("li", {}, c)));
  say($("codes-status"), "");
  showTfa("tfa-codes");
  $("codes-copy").focus();
}

async function loadTfa() {
  $("tfa-loading").hidden = false;
  const result = await api("GET", "/auth/api/v1/me/2fa");
  $("tfa-loading").hidden = true;
  if (!result.ok) {
    $("tfa-card").hidden = false;
    say($("tfa-error"), `Two-factor settings could not be loaded: ${explain(result)}`, "error");
    return;
  }
  tfa = result.data;
  // The section appears only when the organization makes 2FA available.
  $("tfa-card").hidden = !tfa.available;
  if (!tfa.available) return;
  say($("tfa-error"), "");
  enrolling = null;
  if (!tfa.method) {
    $("tfa-choose-sms").hidden = !tfa.sms_available;
    showTfa("tfa-off");
    return;
  }
  const how = tfa.method === "sms" ? `SMS to ${tfa.phone || "your phone"}` : "Authenticator App";
  $("tfa-summary").textContent = `Two-factor authentication is on: ${how}.`;
  $("tfa-remaining").textContent = `Backup codes remaining: ${tfa.backup_codes_remaining}`;
  $("tfa-send-sms").hidden = tfa.method !== "sms";
  $("tfa-disable").hidden = tfa.policy === "required";
  $("tfa-proof").value = "";
  showTfa("tfa-on");
}

/** A backup code (XXXX-XXXX-XXXX) or a numeric code, as the API wants it. */
function proofBody(value) {
  const text = value.trim();
  return /^\d{6}$/.test(text) ? { code: text } : { backup_code: text };
}

function setUpTfa() {
  const error = $("tfa-error");
  const status = $("tfa-status");
  $("tfa-choose-totp").addEventListener("click", () => busy($("tfa-choose-totp"), async () => {
    say(error, "");
    const result = await api("POST", "/auth/api/v1/me/2fa/totp", {});
    if (!result.ok) {
      say(error, explain(result), "error");
      return;
    }
    enrolling = "totp";
    $("qr").src = `data:image/png;base64,${result.data.qr_png_base64}`;
    $("setup-key").textContent = result.data.secret;
    $("tfa-code").value = "";
    showTfa("tfa-totp", "tfa-verify");
    $("tfa-code").focus();
  }));
  $("tfa-choose-sms").addEventListener("click", () => {
    say(error, "");
    enrolling = "sms";
    showTfa("tfa-sms");
    $("tfa-phone").focus();
  });
  $("tfa-sms").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("tfa-sms-send"), async () => {
      say(error, "");
      const result = await api("POST", "/auth/api/v1/me/2fa/sms", { phone: $("tfa-phone").value.trim() });
      if (!result.ok) {
        say(error, explain(result), "error");
        return;
      }
      say(status, "A verification code was sent to your phone.", "notice");
      $("tfa-code").value = "";
      showTfa("tfa-sms", "tfa-verify");
      $("tfa-code").focus();
    });
  });
  $("tfa-verify").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("tfa-verify-submit"), async () => {
      say(error, "");
      const path = enrolling === "sms" ? "/auth/api/v1/me/2fa/sms/verify" : "/auth/api/v1/me/2fa/totp/verify";
      const result = await api("POST", path, { code: $("tfa-code").value.trim() });
      if (!result.ok) {
        say(error, explain(result), "error");
        $("tfa-code").focus();
        return;
      }
      say(status, "Two-factor authentication is now on.", "notice");
      showBackupCodes(result.data.backup_codes);
    });
  });
  $("tfa-setup-cancel").addEventListener("click", () => {
    say(status, "");
    loadTfa();
  });
  $("codes-copy").addEventListener("click", () =>
    copy([...$("backup-list").children].map((li) => li.textContent).join("\n"), $("codes-status"), "Backup codes"));
  $("codes-download").addEventListener("click", () => {
    const codes = [...$("backup-list").children].map((li) => li.textContent);
    download("xelon-hq-backup-codes.txt", `Xelon HQ backup codes for ${me.email}\nEach code can be used once.\n\n${codes.join("\n")}\n`);
    say($("codes-status"), "Backup codes downloaded.", "notice");
  });
  $("codes-done").addEventListener("click", async () => {
    $("backup-list").replaceChildren();
    say(status, "");
    await loadTfa();
    $("tfa-heading").focus();
  });
  $("tfa-send-sms").addEventListener("click", () => busy($("tfa-send-sms"), async () => {
    const result = await api("POST", "/auth/api/v1/me/2fa/sms/code");
    say(result.ok ? status : error, result.ok ? "A code was sent to your phone." : explain(result), result.ok ? "notice" : "error");
  }));
  $("tfa-proof-form").addEventListener("submit", (event) => event.preventDefault());
  $("tfa-regenerate").addEventListener("click", () => busy($("tfa-regenerate"), async () => {
    say(error, "");
    const code = $("tfa-proof").value.trim();
    if (!/^\d{6}$/.test(code)) {
      say(error, "Enter the 6-digit code from your authenticator app or SMS to regenerate backup codes.", "error");
      $("tfa-proof").focus();
      return;
    }
    const result = await api("POST", "/auth/api/v1/me/2fa/backup-codes", { code });
    if (!result.ok) {
      say(error, explain(result), "error");
      return;
    }
    say(status, "New backup codes were created; the old ones no longer work.", "notice");
    showBackupCodes(result.data.backup_codes);
  }));
  $("tfa-disable").addEventListener("click", () => busy($("tfa-disable"), async () => {
    say(error, "");
    const value = $("tfa-proof").value;
    if (!value.trim()) {
      say(error, MESSAGES.current_code_required, "error");
      $("tfa-proof").focus();
      return;
    }
    const sure = await confirmAction({
      title: "Disable two-factor authentication?",
      message: "Your account will be protected by your password only.",
      confirm: "Disable",
    });
    if (!sure) return;
    const result = await api("POST", "/auth/api/v1/me/2fa/disable", proofBody(value));
    if (!result.ok) {
      say(error, explain(result), "error");
      return;
    }
    say(status, "Two-factor authentication is off.", "notice");
    await loadTfa();
  }));
  $("tfa-heading").tabIndex = -1;
}

// --- Quick Login --------------------------------------------------------------------------

async function loadQuickLogin() {
  const result = await api("GET", "/auth/api/v1/me/identities");
  $("quick-loading").hidden = true;
  if (!result.ok) {
    $("quick-rows").replaceChildren();
    const text = result.status === 404
      ? "Quick Login is not available on this gateway yet."
      : `Your Quick Login connections could not be loaded: ${explain(result)}`;
    say($("quick-error"), text, "error");
    return;
  }
  say($("quick-error"), "");
  const identities = result.data.identities || [];
  const available = result.data.available || [];
  const rows = Object.entries(PROVIDERS).map(([id, name]) => {
    const identity = identities.find((i) => i.provider === id);
    const detail = identity
      ? `Connected${identity.email ? ` as ${identity.email}` : ""} since ${when(identity.connected_at)}`
      : available.includes(id) ? "Not connected" : "Not configured on this gateway";
    let button = null;
    if (identity) {
      button = el("button", { type: "button", className: "small secondary", "aria-label": `Disconnect ${name}` }, "Disconnect");
      button.addEventListener("click", () => busy(button, () => disconnect(id, name)));
    } else if (available.includes(id)) {
      button = el("button", { type: "button", className: "small", "aria-label": `Connect ${name}` }, "Connect");
      button.addEventListener("click", () => busy(button, () => connect(id)));
    }
    return el("div", { className: "provider-row", "data-provider": id },
      el("div", {}, el("div", { className: "provider-name" }, name), el("div", { className: "muted" }, detail)),
      button);
  });
  $("quick-rows").replaceChildren(...rows);
}

async function connect(provider) {
  const result = await api("POST", `/auth/api/v1/me/identities/${provider}`);
  if (result.ok && result.data.authorize_url) {
    window.location.assign(result.data.authorize_url);
    return;
  }
  say($("quick-error"), explain(result), "error");
}

async function disconnect(provider, name) {
  const sure = await confirmAction({
    title: `Disconnect ${name}?`,
    message: `You will no longer be able to sign in with ${name}.`,
    confirm: "Disconnect",
  });
  if (!sure) return;
  const result = await api("DELETE", `/auth/api/v1/me/identities/${provider}`);
  if (!result.ok) {
    say($("quick-error"), explain(result), "error");
    return;
  }
  say($("quick-status"), `${name} was disconnected.`, "notice");
  await loadQuickLogin();
}

/** `?connected=google` or `?error=…` after coming back from a provider; then a clean URL. */
function quickLoginOutcome() {
  const params = new URLSearchParams(window.location.search);
  const connected = params.get("connected");
  const error = params.get("error");
  if (connected && PROVIDERS[connected]) {
    say($("quick-status"), `${PROVIDERS[connected]} is now connected.`, "notice");
  } else if (error) {
    say($("quick-error"), MESSAGES[error] || "The provider could not be connected. Please try again.", "error");
  }
  if (connected || error) {
    window.history.replaceState(null, "", window.location.pathname);
  }
}

// --- Service Tokens -----------------------------------------------------------------------

function tokenOrgs() {
  return (me.organizations || []).filter((o) =>
    o.role === "admin" || (o.permissions || []).includes("allowManageServiceTokens"));
}

async function loadTokens() {
  const result = await api("GET", "/auth/api/v1/service-tokens");
  $("tokens-loading").hidden = true;
  if (!result.ok) {
    say($("tokens-error"), `Service tokens could not be loaded: ${explain(result)}`, "error");
    return;
  }
  say($("tokens-error"), "");
  const tokens = result.data.service_tokens || [];
  $("tokens-empty").hidden = tokens.length > 0;
  $("tokens-wrap").hidden = tokens.length === 0;
  fillRows($("tokens-body"), tokens.map((t) => {
    const del = el("button", { type: "button", className: "small danger", "aria-label": `Delete Service ${t.name}` }, "Delete Service");
    del.addEventListener("click", () => deleteToken(t, del));
    // The card is narrow: the action sits under the name rather than in a column of its own.
    return el("tr", { "data-token-id": t.id },
      el("td", {}, el("div", { className: "token-name" }, t.name), del),
      el("td", {}, t.organization_name || t.organization_id),
      el("td", {}, t.ip || "Any"),
      el("td", {}, t.last_used_at ? when(t.last_used_at) : "Never",
        t.last_used_ip ? el("div", { className: "muted" }, `from ${t.last_used_ip}`) : null));
  }));
}

async function deleteToken(token, button) {
  const sure = await confirmAction({
    title: `Delete Service "${token.name}"?`,
    message: "This is irreversible — any application using the token will immediately lose access.",
    confirm: "Delete Service",
  });
  if (!sure) return;
  await busy(button, async () => {
    const result = await api("DELETE", `/auth/api/v1/service-tokens/${encodeURIComponent(token.id)}`);
    if (!result.ok) {
      say($("tokens-error"), explain(result), "error");
      return;
    }
    say($("tokens-status"), `"${token.name}" was deleted.`, "notice");
    await loadTokens();
    $("token-add").focus();
  });
}

function setUpTokens() {
  const orgs = tokenOrgs();
  $("tokens-card").hidden = orgs.length === 0;
  // Without the card the right sidebar is empty: the main column takes the width.
  $("right-sidebar").hidden = orgs.length === 0;
  $("page").classList.toggle("single", orgs.length === 0);
  if (!orgs.length) return;
  const dialog = $("token-dialog");
  const select = $("token-org");
  select.replaceChildren(...orgs.map((o) => el("option", { value: o.id }, o.name)));
  const sessionOrg = me.session && me.session.organization_id;
  if (orgs.some((o) => o.id === sessionOrg)) select.value = sessionOrg;

  $("token-add").addEventListener("click", () => {
    $("token-form").hidden = false;
    $("token-created").hidden = true;
    dialog.setAttribute("aria-labelledby", "token-dialog-title");
    $("token-name").value = "";
    $("token-ip").value = "";
    say($("token-error"), "");
    openDialog(dialog, $("token-name")).then(() => {
      // The token is gone from the page once the dialog closes.
      $("created-token").textContent = "";
      $("created-client-id").textContent = "";
    });
  });
  $("token-cancel").addEventListener("click", () => dialog.close());
  $("token-done").addEventListener("click", () => dialog.close());
  $("token-current-ip").addEventListener("click", () => busy($("token-current-ip"), async () => {
    const result = await api("GET", "/auth/api/v1/me/client-ip");
    if (result.ok && result.data.ip && result.data.ip !== "unknown") {
      $("token-ip").value = result.data.ip;
      say($("token-error"), "");
    } else {
      say($("token-error"), result.ok ? "Your current IP is not known." : explain(result), "error");
    }
  }));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("token-create"), async () => {
      say($("token-error"), "");
      const name = $("token-name").value.trim();
      if (!name) {
        say($("token-error"), "Enter a Service Name.", "error");
        $("token-name").focus();
        return;
      }
      const body = { name, organization_id: select.value };
      const ip = $("token-ip").value.trim();
      if (ip) body.ip = ip;
      const result = await api("POST", "/auth/api/v1/service-tokens", body);
      if (!result.ok) {
        say($("token-error"), explain(result), "error");
        return;
      }
      $("created-token").textContent = result.data.token;
      $("created-client-id").textContent = result.data.client_id;
      say($("copy-status"), "");
      $("token-form").hidden = true;
      $("token-created").hidden = false;
      dialog.setAttribute("aria-labelledby", "token-created-title");
      $("copy-token").focus();
      loadTokens();
    });
  });
  $("copy-token").addEventListener("click", () => copy($("created-token").textContent, $("copy-status"), "Token"));
  $("copy-client-id").addEventListener("click", () => copy($("created-client-id").textContent, $("copy-status"), "Client Id"));
  loadTokens();
}

// --- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  me = await start($("page-error"));
  $("page-status").hidden = true;
  if (!me) return;
  $("page").hidden = false;
  setUpAvatar();
  setUpProfile();
  setUpPassword();
  setUpTfa();
  setUpTokens();
  quickLoginOutcome();
  await Promise.all([loadTfa(), loadQuickLogin()]);
});
