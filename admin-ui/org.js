// Manage My Organization (org admins): the "Active sessions" tab (Session Duration, Active
// Sessions with "Expire now", Expired Sessions with the reason), the two-factor policy and the
// members list — all over the JSON API.
import {
  $, el, api, explain, say, busy, when, start, adminOrgs, confirmAction, fillRows,
} from "/auth/ui/common.js";

const REASONS = {
  logged_out: "Signed out",
  expired_by_admin: "Expired by an administrator",
  timed_out: "Session duration reached",
  password_changed: "Password changed",
  member_removed: "Removed from the organization",
  two_factor_reset: "Two-factor authentication reset",
};
const TABS = ["sessions", "security", "members"];

let me = null;
let orgId = null;
const loaded = new Set();

function orgPath(suffix) {
  return `/auth/api/v1/orgs/${encodeURIComponent(orgId)}${suffix}`;
}

// --- tabs (arrow keys move between them, as in the WAI-ARIA tabs pattern) -------------------

function selectTab(name, focus) {
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${tab}`).hidden = !selected;
  }
  if (focus) $(`tab-${name}`).focus();
  if (!loaded.has(name)) {
    loaded.add(name);
    if (name === "security") loadSettings();
    if (name === "members") loadMembers();
  }
}

function setUpTabs() {
  for (const tab of TABS) {
    const button = $(`tab-${tab}`);
    button.addEventListener("click", () => selectTab(tab, false));
    button.addEventListener("keydown", (event) => {
      const at = TABS.indexOf(tab);
      let to = null;
      if (event.key === "ArrowRight") to = TABS[(at + 1) % TABS.length];
      if (event.key === "ArrowLeft") to = TABS[(at - 1 + TABS.length) % TABS.length];
      if (event.key === "Home") to = TABS[0];
      if (event.key === "End") to = TABS[TABS.length - 1];
      if (to) {
        event.preventDefault();
        selectTab(to, true);
      }
    });
  }
}

// --- settings: Session Duration and the two-factor policy ----------------------------------

/** The settings controls stay disabled until the organization's values are in them. */
function settingsReady(ready) {
  for (const id of ["session-duration", "duration-save", "policy-save"]) $(id).disabled = !ready;
}

async function loadSettings() {
  settingsReady(false);
  const result = await api("GET", orgPath("/settings"));
  if (!result.ok) {
    say($("duration-status"), `The settings could not be loaded: ${explain(result)}`, "error");
    say($("policy-status"), `The settings could not be loaded: ${explain(result)}`, "error");
    return;
  }
  $("session-duration").value = String(result.data.session_duration_days);
  for (const radio of document.querySelectorAll("input[name=policy]")) {
    radio.checked = radio.value === result.data.two_factor;
  }
  settingsReady(true);
}

async function saveSettings(button, body, status, done) {
  await busy(button, async () => {
    say(status, "Saving…", "notice");
    const result = await api("PUT", orgPath("/settings"), body);
    if (!result.ok) {
      say(status, explain(result), "error");
      return;
    }
    say(status, done(result.data), "notice");
  });
}

function setUpSettings() {
  $("duration-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const days = Number($("session-duration").value);
    saveSettings($("duration-save"), { session_duration_days: days }, $("duration-status"), (org) => {
      loadSessions();
      const n = org.session_duration_days;
      return `Sessions now last ${n} ${n === 1 ? "day" : "days"} from sign-in.`;
    });
  });
  $("policy-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = document.querySelector("input[name=policy]:checked");
    if (!chosen) {
      say($("policy-status"), "Choose off, optional or required.", "error");
      return;
    }
    saveSettings($("policy-save"), { two_factor: chosen.value }, $("policy-status"),
      (org) => `Two-factor authentication is now ${org.two_factor} for this organization.`);
  });
}

// --- sessions -------------------------------------------------------------------------------

function sessionCells(s) {
  const name = s.user_name || s.user_id;
  const own = me.session && s.id === me.session.id;
  return [
    el("td", {}, own ? `${name} (this session)` : name),
    el("td", {}, s.ip || "—"),
    el("td", { className: "ua" }, s.user_agent || "—"),
    el("td", {}, when(s.last_activity_at)),
    el("td", {}, when(s.expires_at)),
  ];
}

async function loadList(state) {
  const result = await api("GET", orgPath(`/sessions?state=${state}`));
  $(`${state}-loading`).hidden = true;
  if (!result.ok) {
    say($(`${state}-error`), `The ${state} sessions could not be loaded: ${explain(result)}`, "error");
    return;
  }
  say($(`${state}-error`), "");
  const sessions = result.data.sessions || [];
  $(`${state}-empty`).hidden = sessions.length > 0;
  $(`${state}-wrap`).hidden = sessions.length === 0;
  fillRows($(`${state}-body`), sessions.map((s) => {
    const row = el("tr", { "data-session-id": s.id }, ...sessionCells(s));
    if (state === "active") {
      const button = el("button", { type: "button", className: "small danger", "aria-label": `Expire now: ${s.user_name || s.user_id}, ${s.ip}` }, "Expire now");
      button.addEventListener("click", () => expire(s, button));
      row.append(el("td", {}, button));
    } else {
      row.append(el("td", {}, REASONS[s.ended_reason] || s.ended_reason || "—"));
    }
    return row;
  }));
}

function loadSessions() {
  return Promise.all([loadList("active"), loadList("expired")]);
}

async function expire(session, button) {
  const own = me.session && session.id === me.session.id;
  const sure = await confirmAction({
    title: "Expire this session now?",
    message: own
      ? "This is your own session: you will be signed out."
      : `${session.user_name || "The user"} will be logged out on that device (${session.ip}).`,
    confirm: "Expire now",
  });
  if (!sure) return;
  await busy(button, async () => {
    const result = await api("POST", orgPath(`/sessions/${encodeURIComponent(session.id)}/expire`));
    if (!result.ok) {
      say($("active-error"), explain(result), "error");
      return;
    }
    if (own) {
      window.location.assign("/auth/login");
      return;
    }
    say($("active-status"), `The session of ${session.user_name || "the user"} was expired.`, "notice");
    await loadSessions();
    $("active-heading").focus();
  });
}

// --- members --------------------------------------------------------------------------------

async function loadMembers() {
  const result = await api("GET", orgPath("/users"));
  $("members-loading").hidden = true;
  if (!result.ok) {
    say($("members-error"), `The members could not be loaded: ${explain(result)}`, "error");
    return;
  }
  say($("members-error"), "");
  $("members-wrap").hidden = false;
  fillRows($("members-body"), (result.data.members || []).map((m) => el("tr", {},
    el("td", {}, [m.first_name, m.last_name].filter(Boolean).join(" ")),
    el("td", {}, m.email),
    el("td", {}, m.role === "admin" ? "Administrator" : "Member"),
    el("td", {}, (m.permissions || []).join(", ") || "—"),
    el("td", {}, m.has_password ? "Set" : "None"))));
}

// --- start ----------------------------------------------------------------------------------

function chooseOrg(id) {
  orgId = id;
  loaded.clear();
  loaded.add("sessions");
  for (const state of ["active", "expired"]) {
    $(`${state}-loading`).hidden = false;
  }
  loadSettings();
  loadSessions();
  const current = TABS.find((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
  selectTab(current || "sessions", false);
}

document.addEventListener("DOMContentLoaded", async () => {
  me = await start($("page-error"));
  $("page-status").hidden = true;
  if (!me) return;
  const orgs = adminOrgs(me);
  if (!orgs.length) {
    $("not-admin").hidden = false;
    return;
  }
  $("page").hidden = false;
  $("active-heading").tabIndex = -1;
  setUpTabs();
  setUpSettings();
  $("sessions-refresh").addEventListener("click", () => busy($("sessions-refresh"), loadSessions));
  const select = $("org-select");
  select.replaceChildren(...orgs.map((o) => el("option", { value: o.id }, o.name)));
  $("org-picker").hidden = orgs.length < 2;
  const sessionOrg = me.session && me.session.organization_id;
  select.value = orgs.some((o) => o.id === sessionOrg) ? sessionOrg : orgs[0].id;
  select.addEventListener("change", () => chooseOrg(select.value));
  $("org-subtitle").textContent = orgs.length < 2 ? orgs[0].name : "Sessions, security policy and members of your organizations.";
  chooseOrg(select.value);
});
