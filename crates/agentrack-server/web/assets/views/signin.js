// Sign-in: a token, checked against the server, kept in this tab's session storage only.

import { h } from "../dom.js";

/** The sign-in form; `onToken(token)` checks it and throws an ApiError when it is refused. */
export function signIn({ message, onToken }) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
  });
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const button = h("button", { type: "submit" }, ["Sign in"]);
  const form = h("form", { class: "signin-form", novalidate: true }, [
    h("label", { for: "token" }, ["Token"]),
    input,
    h("p", { class: "hint", id: "token-help" }, [
      "An agentrack token (agt_…). The first admin token is in ",
      h("code", {}, ["agentrack-data/admin.token"]),
      "; make others with ",
      h("code", {}, ["agentrack token create"]),
      ". It is kept in this browser tab only and forgotten when the tab closes.",
    ]),
    button,
    error,
  ]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter a token.";
      input.focus();
      return;
    }
    button.disabled = true;
    error.textContent = "";
    form.setAttribute("aria-busy", "true");
    try {
      await onToken(token);
    } catch (failure) {
      error.textContent =
        failure.status === 401
          ? "This token is not valid on this server (unknown or revoked)."
          : `Could not sign in: ${failure.message}`;
      button.disabled = false;
      form.removeAttribute("aria-busy");
      input.focus();
    }
  });
  const section = h("section", { class: "signin", "aria-labelledby": "signin-title" }, [
    h("h1", { id: "signin-title" }, ["Sign in to agentrack"]),
    message ? h("p", { class: "notice", role: "status" }, [message]) : null,
    form,
  ]);
  queueMicrotask(() => input.focus());
  return section;
}
