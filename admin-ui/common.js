// Shared by the signed-in pages (My Account, Manage My Organization): the API client (JSON,
// X-CSRF-Token on every change), error messages, the top bar with the avatar menu, dialogs
// that trap and restore focus, and small DOM helpers. Text only ever goes in through
// textContent: nothing from the server or the URL is parsed as HTML. No token or secret is
// ever written to storage or to a URL.

let csrfToken = "";

/** `$("id")`: the element with that id. */
export const $ = (id) => document.getElementById(id);

/** Creates an element: `el("td", { className: "ua" }, "text", child)`. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith("aria-") || key.startsWith("data-") || key === "role" || key === "scope") {
      node.setAttribute(key, value);
    } else {
      node[key] = value;
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child);
    }
  }
  return node;
}

/** What a stable error code means to a person. */
export const MESSAGES = {
  authentication_required: "Your session has ended. Please sign in again.",
  csrf_token_invalid: "Your session has changed. Please reload the page.",
  forbidden: "You are not allowed to do this.",
  not_found: "It no longer exists. Please reload the page.",
  store_unavailable: "The service is temporarily unavailable. Please retry shortly.",
  unavailable: "The service could not be reached. Check your connection and retry.",
  internal_error: "Something went wrong on our side. Please retry.",
  too_many_attempts: "Too many failed attempts. Please wait and try again.",
  invalid_current_password: "The current password is wrong.",
  password_changed_concurrently: "Your password was changed meanwhile. Please sign in again.",
  email_taken: "Another account already uses this email address.",
  body_too_large: "The image is larger than 2 MB.",
  unsupported_media_type: "Only PNG, JPEG and WebP images can be used.",
  invalid_image: "This file is not an image we can read.",
  image_too_large: "The image is too large (at most 8192 pixels on a side).",
  invalid_code: "That code is wrong or has expired.",
  current_code_required: "Enter a current code or a backup code first.",
  two_factor_not_available: "Your organization has not made two-factor authentication available.",
  two_factor_required: "Your organization requires two-factor authentication: it cannot be turned off.",
  two_factor_not_enabled: "Two-factor authentication is not enabled.",
  invalid_phone: "Enter the number in international form, e.g. +41791234567.",
  sms_delivery_failed: "The SMS could not be sent. Please try again later.",
  sms_not_configured: "SMS codes are not available on this gateway.",
  no_sms_method: "SMS is not your second factor.",
  invalid_name: "Service Name: 1 to 100 characters.",
  invalid_ip: "IP: one address (203.0.113.7) or a range (203.0.113.0/24).",
  token_limit_reached: "You have 100 service tokens, the most allowed. Delete unused ones first.",
  invalid_session_duration: "Choose 1, 7, 14 or 30 days.",
  invalid_two_factor: "Choose off, optional or required.",
  last_login_method: "This is your only way to sign in. Set a password or connect another provider first.",
  identity_in_use: "That account is already connected to another Xelon HQ user.",
  identity_already_connected: "You already have an account of this provider connected. Disconnect it first.",
  oauth_denied: "The connection was cancelled at the provider.",
  oauth_failed: "The provider could not confirm your account. Please try again.",
  oauth_code_rejected: "The provider did not accept the sign-in. Please try again.",
  oauth_invalid_id_token: "The provider's answer could not be verified. Please try again.",
  oauth_unreachable: "The provider could not be reached. Please try again later.",
  oauth_unavailable: "This provider is not available here.",
  oauth_state_invalid: "The connection took too long or was started elsewhere. Please try again.",
};

/** Seconds as "45 seconds" / "3 minutes". */
export function waitText(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s) || s <= 0) return "";
  if (s < 90) return `${Math.ceil(s)} seconds`;
  return `${Math.ceil(s / 60)} minutes`;
}

/** A message for a failed call: the wait for a 429, our words for a known code, else the server's. */
export function explain(result) {
  if (result.status === 429 && result.retryAfter) {
    return `Too many attempts. Try again in ${waitText(result.retryAfter)}.`;
  }
  const code = result.data && result.data.error;
  return MESSAGES[code] || (result.data && result.data.message) || MESSAGES.unavailable;
}

/**
 * Calls the API. `body` is JSON unless it is a Blob (sent as is, with its type). Never throws:
 * `{ok, status, data, retryAfter}`, with `status` 0 when the network failed. A 401 on a page
 * that needs a session goes back to the login page.
 */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") {
    headers["X-CSRF-Token"] = csrfToken;
  }
  if (body instanceof Blob) {
    headers["Content-Type"] = body.type || "application/octet-stream";
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (_) {
    return { ok: false, status: 0, data: { error: "unavailable" } };
  }
  let data = {};
  try { data = await resp.json(); } catch (_) { /* 204 and 202 have no body */ }
  if (resp.status === 401 && data.error === "authentication_required") {
    toLogin();
  }
  return { ok: resp.ok, status: resp.status, data, retryAfter: resp.headers.get("Retry-After") };
}

export function toLogin() {
  const next = window.location.pathname;
  window.location.assign(`/auth/login?next=${encodeURIComponent(next)}`);
}

/** Shows `text` in a status element (role=alert or role=status), hides it when empty. */
export function say(element, text, kind) {
  element.textContent = text || "";
  element.hidden = !text;
  if (kind) {
    element.classList.toggle("error", kind === "error");
    element.classList.toggle("notice", kind === "notice");
  }
}

/** Disables a button while `work` runs, so a slow request cannot be sent twice. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/**
 * Replaces the rows of a table body. Each cell is labelled with its column's heading, which
 * narrow screens show beside the value (a `table.stack` then reads as a list of cards).
 */
export function fillRows(tbody, rows) {
  const heads = [...tbody.closest("table").querySelectorAll("thead th")].map((th) => th.textContent.trim());
  for (const row of rows) {
    [...row.children].forEach((cell, i) => cell.setAttribute("data-label", heads[i] || ""));
  }
  tbody.replaceChildren(...rows);
}

/** A local date and time for an RFC 3339 timestamp ("—" for none). */
export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function displayName(me) {
  return [me.first_name, me.last_name].filter(Boolean).join(" ") || me.email;
}

function initials(me) {
  const parts = [me.first_name, me.last_name].filter(Boolean);
  const text = parts.length ? parts.map((p) => p[0]).join("") : (me.email || "?")[0];
  return text.toUpperCase();
}

/**
 * Fills `slot` with the person's avatar image, or their initials when they have none. The
 * image is decorative (the name is next to it), so its alt text is empty.
 */
export function renderAvatar(slot, me, large, version) {
  const fallback = el("span", { className: `avatar${large ? " large" : ""}`, "aria-hidden": "true" }, initials(me));
  const img = el("img", { className: `avatar${large ? " large" : ""}`, alt: "" });
  img.addEventListener("error", () => img.replaceWith(fallback));
  img.src = `/auth/api/v1/users/${encodeURIComponent(me.id)}/avatar${version ? `?v=${version}` : ""}`;
  slot.replaceChildren(img);
}

/** Organizations the person administers. */
export function adminOrgs(me) {
  return (me.organizations || []).filter((o) => o.role === "admin");
}

/** The signed-in pages, in the avatar menu and the sidebar. */
const PAGES = [
  { href: "/auth/account", label: "My Account" },
  { href: "/auth/org", label: "Manage My Organization", adminOnly: true },
];

/**
 * Loads the signed-in person (`GET /auth/api/v1/me`), keeps the CSRF token, and draws what
 * every signed-in page shares: the avatar menu (top right), the sidebar and the confirmation
 * dialog. Returns the person, or null after showing `failed`.
 */
export async function start(failed) {
  const result = await api("GET", "/auth/api/v1/me");
  if (!result.ok) {
    if (result.status !== 401) {
      say(failed, `Your account could not be loaded: ${explain(result)}`, "error");
    }
    return null;
  }
  const me = result.data;
  csrfToken = me.csrf_token;
  drawShell(adminOrgs(me).length > 0);
  $("avatar-name").textContent = displayName(me);
  renderAvatar($("avatar-slot"), me, false);
  setUpMenu();
  return me;
}

function drawShell(isAdmin) {
  const pages = PAGES.filter((p) => isAdmin || !p.adminOnly);
  const link = (p, props) => el("a", {
    href: p.href, ...props, ...(p.href === window.location.pathname ? { "aria-current": "page" } : {}),
  }, p.label);
  const button = el("button", {
    type: "button", id: "avatar-button", "aria-haspopup": "menu", "aria-expanded": "false", "aria-controls": "menu",
  }, el("span", { id: "avatar-slot" }), el("span", { id: "avatar-name" }), el("span", { className: "visually-hidden" }, " (user menu)"));
  const menu = el("ul", { id: "menu", role: "menu", "aria-label": "User menu", hidden: true },
    ...pages.map((p) => el("li", { role: "none" }, link(p, { role: "menuitem" }))),
    el("li", { role: "none" }, el("button", { type: "button", role: "menuitem", id: "sign-out" }, "Sign out")));
  $("topbar").append(el("div", { className: "avatar-menu" }, button, menu));
  $("sidebar").append(el("ul", {}, ...pages.map((p) => el("li", {}, link(p, {})))));
  document.body.append(el("dialog", { id: "confirm-dialog", "aria-labelledby": "confirm-title", "aria-describedby": "confirm-message" },
    el("form", { method: "dialog" },
      el("h2", { id: "confirm-title" }),
      el("p", { id: "confirm-message" }),
      el("div", { className: "actions" },
        el("button", { type: "submit", value: "ok", id: "confirm-ok", className: "danger" }),
        el("button", { type: "submit", value: "cancel", id: "confirm-cancel", className: "secondary" }, "Cancel")))));
}

/** The avatar menu (top right): a menu button, arrow keys inside, Escape closes. */
function setUpMenu() {
  const button = $("avatar-button");
  const menu = $("menu");
  const items = () => [...menu.querySelectorAll("[role=menuitem]")].filter((i) => !i.closest("[hidden]"));
  const close = (focusButton) => {
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (focusButton) button.focus();
  };
  const open = (index) => {
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    const list = items();
    list[(index + list.length) % list.length].focus();
  };
  button.addEventListener("click", () => (menu.hidden ? open(0) : close(false)));
  button.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") { event.preventDefault(); open(0); }
    if (event.key === "ArrowUp") { event.preventDefault(); open(-1); }
  });
  menu.addEventListener("keydown", (event) => {
    const list = items();
    const at = list.indexOf(document.activeElement);
    if (event.key === "ArrowDown") { event.preventDefault(); list[(at + 1) % list.length].focus(); }
    if (event.key === "ArrowUp") { event.preventDefault(); list[(at - 1 + list.length) % list.length].focus(); }
    if (event.key === "Home") { event.preventDefault(); list[0].focus(); }
    if (event.key === "End") { event.preventDefault(); list[list.length - 1].focus(); }
    if (event.key === "Escape") { event.preventDefault(); close(true); }
    if (event.key === "Tab") close(false);
  });
  document.addEventListener("click", (event) => {
    if (!menu.hidden && !menu.contains(event.target) && !button.contains(event.target)) close(false);
  });
  $("sign-out").addEventListener("click", async () => {
    await fetch("/auth/logout", { method: "POST", credentials: "same-origin" }).catch(() => {});
    window.location.assign("/auth/login");
  });
}

/**
 * Opens a modal `<dialog>`: the rest of the page is inert while it is open, Tab cycles inside
 * it, Escape closes it, and focus goes back to what had it before. Returns a promise of the
 * dialog's returnValue when it closes.
 */
export function openDialog(dialog, focusFirst) {
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const trap = (event) => {
      if (event.key !== "Tab") return;
      const focusable = [...dialog.querySelectorAll("button, input, select, textarea, a[href], [tabindex]:not([tabindex='-1'])")]
        .filter((n) => !n.disabled && !n.closest("[hidden]"));
      if (!focusable.length) return;
      const first = focusable[0];
      const last = focusable[focusable.length - 1];
      if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
      else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
    };
    const closed = () => {
      dialog.removeEventListener("keydown", trap);
      dialog.removeEventListener("close", closed);
      if (opener && document.contains(opener) && typeof opener.focus === "function") opener.focus();
      resolve(dialog.returnValue);
    };
    dialog.returnValue = "";
    dialog.addEventListener("keydown", trap);
    dialog.addEventListener("close", closed);
    dialog.showModal();
    if (focusFirst) focusFirst.focus();
  });
}

/**
 * Asks for confirmation in the page's `#confirm-dialog`. Resolves true when the person
 * presses the confirm button.
 */
export async function confirmAction({ title, message, confirm }) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-message").textContent = message;
  $("confirm-ok").textContent = confirm;
  return (await openDialog(dialog, $("confirm-cancel"))) === "ok";
}

/** Copies text to the clipboard; says so in `status`. */
export async function copy(text, status, what) {
  try {
    await navigator.clipboard.writeText(text);
    say(status, `${what} copied to the clipboard.`, "notice");
  } catch (_) {
    say(status, `Could not copy: select the ${what.toLowerCase()} and copy it by hand.`, "error");
  }
}

/** Offers `text` as a downloaded file. */
export function download(filename, text) {
  const link = el("a", { href: `data:text/plain;charset=utf-8,${encodeURIComponent(text)}`, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
}
