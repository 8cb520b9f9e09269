// The login page: the password step, then — when the account has two-factor authentication
// or its organization requires it — the second step or the enrolment, all over the JSON API.
// Messages are set with textContent only: nothing from the URL or the server is parsed as HTML.
import { $, MESSAGES as SHARED, waitText } from "/auth/ui/common.js";

// The shared messages, with the login's own words where they differ.
const MESSAGES = {
  ...SHARED,
  invalid_credentials: "The email or password is wrong.",
  invalid_request: "Please enter your email and password.",
  invalid_challenge: "This sign-in has expired. Please start again.",
  second_step_needs_javascript: "Please enable JavaScript to finish signing in.",
  oauth_not_linked: "That account is not connected to any Xelon HQ user. Sign in with your email and password, then connect it under My Account → Quick Login.",
  oauth_denied: "The sign-in was cancelled at the provider.",
  oauth_state_invalid: "The sign-in took too long or was started in another window. Please try again.",
  no_organization: "Your account is not a member of any organization. Ask your administrator.",
  unavailable: "The service is temporarily unavailable. Please retry shortly.",
};

let challenge = null;
let next = "/";

function safeNext(value) {
  if (!value || !value.startsWith("/") || value.startsWith("//") || value.startsWith("/\\")) {
    return "/";
  }
  return value;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function show(id) {
  for (const section of ["login-form", "code-form", "enrol", "backup-codes"]) {
    $(section).hidden = section !== id;
  }
}

async function call(path, body) {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (_) {
    return { ok: false, status: 0, data: { error: "unavailable" } };
  }
  let data = {};
  try { data = await resp.json(); } catch (_) { /* 202 / 204 have no body */ }
  return { ok: resp.ok, status: resp.status, data, retryAfter: resp.headers.get("Retry-After") };
}

function explain(result) {
  if (result.status === 429 && result.retryAfter) {
    return `Too many failed attempts. Try again in ${waitText(result.retryAfter)}.`;
  }
  return MESSAGES[result.data.error] || result.data.message || MESSAGES.unavailable;
}

function done(result) {
  if (result.data.backup_codes) {
    const list = $("backup-list");
    list.replaceChildren();
    for (const code of result.data.backup_codes) {
      const item = document.createElement("li");
      item.textContent = code;
      list.appendChild(item);
    }
    show("backup-codes");
    return;
  }
  window.location.assign(next);
}

function afterPassword(result) {
  challenge = result.data.challenge || null;
  if (result.data.status === "2fa_required") {
    const sms = result.data.method === "sms";
    $("code-hint").textContent = sms
      ? "We sent a 6-digit code to your phone. Enter it below."
      : "Enter the 6-digit code from your authenticator app.";
    $("resend").hidden = !sms;
    show("code-form");
    $("code").focus();
  } else if (result.data.status === "2fa_enrollment_required") {
    $("enrol-sms").hidden = !(result.data.methods || []).includes("sms");
    show("enrol");
  } else {
    done(result);
  }
}

const PROVIDER_NAMES = { google: "Google", github: "GitHub" };

// "Sign in with Google" / "Sign in with GitHub" for the configured providers: plain links, so
// the provider round trip is an ordinary navigation that comes back to `next`.
async function showProviders() {
  let providers = [];
  try {
    const resp = await fetch("/auth/oauth/providers", { headers: { Accept: "application/json" } });
    if (resp.ok) providers = (await resp.json()).providers || [];
  } catch (_) { /* no Quick Login: no buttons */ }
  const links = providers.filter((p) => PROVIDER_NAMES[p]).map((p) => {
    const link = document.createElement("a");
    link.href = `/auth/oauth/${p}/start?next=${encodeURIComponent(next)}`;
    link.textContent = `Sign in with ${PROVIDER_NAMES[p]}`;
    return link;
  });
  $("oauth").replaceChildren(...links);
  $("oauth").hidden = links.length === 0;
}

document.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(window.location.search);
  next = safeNext(params.get("next"));
  $("next").value = next;
  const error = params.get("error");
  if (error) {
    showError(MESSAGES[error] || MESSAGES.invalid_request);
  }
  showProviders();
  // After "Sign in with …" for a person with two-factor authentication, the provider's return
  // lands here with the step to show; the challenge itself is in an HttpOnly cookie, so the
  // calls below send none.
  const step = params.get("step");
  if (step === "2fa") {
    afterPassword({ data: { status: "2fa_required", method: params.get("method") } });
  } else if (step === "enroll") {
    afterPassword({ data: { status: "2fa_enrollment_required", methods: (params.get("methods") || "").split(",") } });
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    $("sign-in").disabled = true;
    const result = await call("/auth/login", {
      email: $("email").value,
      password: $("password").value,
    });
    $("sign-in").disabled = false;
    if (result.ok) {
      afterPassword(result);
    } else {
      showError(explain(result));
    }
  });

  $("use-backup").addEventListener("click", () => {
    const useBackup = $("backup-field").hidden;
    $("backup-field").hidden = !useBackup;
    $("code-field").hidden = useBackup;
    $("use-backup").textContent = useBackup ? "Use an authentication code" : "Use a backup code";
  });

  $("resend").addEventListener("click", async () => {
    const result = await call("/auth/login/2fa/resend", { challenge });
    showError(result.ok ? "" : explain(result));
  });

  $("code-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = $("backup-field").hidden
      ? { challenge, code: $("code").value }
      : { challenge, backup_code: $("backup-code").value };
    const result = await call("/auth/login/2fa", body);
    if (result.ok) {
      done(result);
    } else {
      showError(explain(result));
    }
  });

  $("enrol-totp").addEventListener("click", async () => {
    const result = await call("/auth/login/2fa/enroll/totp", { challenge });
    if (!result.ok) {
      showError(explain(result));
      return;
    }
    $("qr").src = `data:image/png;base64,${result.data.qr_png_base64}`;
    $("setup-key").textContent = result.data.secret;
    $("totp-setup").hidden = false;
    $("sms-setup").hidden = true;
    $("enrol-verify").hidden = false;
  });

  $("enrol-sms").addEventListener("click", () => {
    $("sms-setup").hidden = false;
    $("totp-setup").hidden = true;
  });

  $("sms-setup").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await call("/auth/login/2fa/enroll/sms", { challenge, phone: $("phone").value });
    if (result.ok) {
      showError("");
      $("enrol-verify").hidden = false;
    } else {
      showError(explain(result));
    }
  });

  $("enrol-verify").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await call("/auth/login/2fa/enroll/verify", { challenge, code: $("enrol-code").value });
    if (result.ok) {
      showError("");
      done(result);
    } else {
      showError(explain(result));
    }
  });

  $("continue").addEventListener("click", () => window.location.assign(next));
});
