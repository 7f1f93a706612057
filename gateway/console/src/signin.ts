// The sign-in form: an admin API key, checked by the console (console.ts).

import { field, h } from "./dom";
import { Strings } from "./i18n";

/** The heading, an explanation and the form; `submit` gets the key typed in (trimmed, not empty). */
export function signInForm(t: Strings, submit: (key: string) => void): Node[] {
  const input = h("input", { type: "password", autocomplete: "off", spellcheck: "false", autocapitalize: "off" });
  const key = field("api-key", t.apiKey, input, t.signInIntro);
  const button = h("button", { type: "submit" }, t.signIn);
  const form = h("form", { class: "signin panel", novalidate: true, "data-testid": "signin" }, key.block, h("div", {}, button));
  form.addEventListener("submit", (event) => {
    // The page's CSP forbids form navigation: a submit is handled here.
    event.preventDefault();
    const value = input.value.trim();
    if (!value) {
      key.invalid(t.keyRequired);
      input.focus();
      return;
    }
    key.invalid(null);
    button.disabled = true;
    button.textContent = t.signingIn;
    submit(value);
  });
  return [h("h1", { tabindex: "-1" }, t.signInTitle), form];
}
