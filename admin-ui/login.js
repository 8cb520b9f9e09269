// The login page: posts JSON to /auth/login and follows `next` on success. Messages are set
// with textContent only: nothing from the URL or the server is ever parsed as HTML.
"use strict";

const MESSAGES = {
  invalid_credentials: "The email or password is wrong.",
  too_many_attempts: "Too many failed attempts. Please wait and try again.",
  invalid_request: "Please enter your email and password.",
  oauth_not_linked: "That account is not linked to any Xelon HQ user.",
  unavailable: "The service is temporarily unavailable. Please retry shortly.",
};

function safeNext(next) {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) {
    return "/";
  }
  return next;
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(window.location.search);
  const next = safeNext(params.get("next"));
  document.getElementById("next").value = next;
  const error = params.get("error");
  if (error) {
    showError(MESSAGES[error] || MESSAGES.invalid_request);
  }
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      email: document.getElementById("email").value,
      password: document.getElementById("password").value,
    };
    let resp;
    try {
      resp = await fetch("/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (_) {
      showError(MESSAGES.unavailable);
      return;
    }
    if (resp.ok) {
      window.location.assign(next);
      return;
    }
    let data = {};
    try { data = await resp.json(); } catch (_) { /* not JSON */ }
    if (resp.status === 429) {
      const wait = resp.headers.get("Retry-After");
      showError(wait ? `Too many failed attempts. Try again in ${wait} seconds.` : MESSAGES.too_many_attempts);
    } else {
      showError(MESSAGES[data.error] || data.message || MESSAGES.unavailable);
    }
  });
});
