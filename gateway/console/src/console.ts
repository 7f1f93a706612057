// The admin console the gateway serves at /admin: one page whose shell is
// `<div id="console"></div>`; everything else is built here.
//
// Sign-in takes an API key with the admin scope, checked with
// `GET /v1/settings`, and keeps it in sessionStorage only (this tab, until it
// closes). The quick start's one-time link `/admin#key=<key>` signs in too and
// the key leaves the address bar at once. Every call goes through the public
// HTTP API, same-origin (the page's CSP allows nothing else).

import { Api, Problem } from "./api";
import { auditView } from "./audit";
import { Context, problemText, View } from "./context";
import { customersView } from "./customers";
import { dashboardView } from "./dashboard";
import { h } from "./dom";
import { CATALOG, formats, isLang, Key, Lang, LANG_NAMES, LANGS, pickLang, Strings } from "./i18n";
import { NOTICES } from "./licenses";
import { programView } from "./program";
import { href, parse, Route, ViewName } from "./router";
import { signInForm } from "./signin";
import { STYLES } from "./styles";

const KEY_STORAGE = "loyalty-console-key";
const LANG_STORAGE = "loyalty-console-lang";

interface Section {
  view: ViewName;
  /** Where its navigation link leads. */
  home: Route;
  label: Key;
  title: Key;
  /** Each view takes its own kind of route; `mount` hands it only that kind. */
  render: View<never>;
}

/** The console's sections, in the navigation's order. */
const SECTIONS: Section[] = [
  { view: "dashboard", home: { view: "dashboard" }, label: "navDashboard", title: "dashTitle", render: dashboardView },
  { view: "customers", home: { view: "customers", customer: null }, label: "navCustomers", title: "custTitle", render: customersView },
  { view: "program", home: { view: "program", part: "earning" }, label: "navProgram", title: "progTitle", render: programView },
  { view: "audit", home: { view: "audit", actor: "", entity: "" }, label: "navAudit", title: "auditTitle", render: auditView },
];

/** A message for the status region; written in the language shown when it is rendered. */
interface Message {
  text: (t: Strings) => string;
  tone: "info" | "error";
}

class AdminConsole {
  private lang: Lang = initialLang();
  private t: Strings = CATALOG[this.lang];
  private api: Api | null = null;
  /** Grows with every view mounted: answers for an older one are dropped. */
  private generation = 0;
  private cleanups: (() => void)[] = [];
  private message: Message | null = null;

  private readonly brand = h("span", { class: "brand" });
  private readonly languageLabel = h("label", { for: "language" });
  private readonly languageSelect = h(
    "select",
    { id: "language" },
    ...LANGS.map((lang) => h("option", { value: lang, lang }, LANG_NAMES[lang])),
  );
  private readonly signOutButton = h("button", { type: "button", class: "secondary", "data-testid": "sign-out" });
  private readonly nav = h("nav");
  private readonly skip = h("a", { class: "skip", href: "#main" });
  private readonly status = h("div", { id: "console-status", class: "status", role: "status", "aria-live": "polite", "data-testid": "status" });
  private readonly view = h("div", { class: "view" });
  private readonly main = h("main", { id: "main", tabindex: "-1" }, this.status, this.view);
  private readonly licenses = h("summary");

  constructor(root: HTMLElement) {
    const style = document.createElement("style");
    style.textContent = STYLES;
    document.head.append(style);
    this.languageSelect.addEventListener("change", () => this.setLang(this.languageSelect.value));
    this.signOutButton.addEventListener("click", () => this.signOut());
    this.skip.addEventListener("click", (event) => {
      // Not a route: focus the content instead of changing the hash.
      event.preventDefault();
      this.main.focus();
    });
    root.replaceChildren(
      this.skip,
      h(
        "header",
        { class: "top" },
        h("div", { class: "top-row" }, this.brand, h("div", { class: "language" }, this.languageLabel, this.languageSelect), this.signOutButton),
        this.nav,
      ),
      this.main,
      h("footer", { class: "bottom" }, h("details", {}, this.licenses, h("pre", {}, NOTICES))),
    );
  }

  start() {
    window.addEventListener("hashchange", () => {
      const key = takeLinkKey();
      if (key) void this.signIn(key, "link");
      else {
        this.message = null;
        this.mount(true);
      }
    });
    const linked = takeLinkKey();
    const stored = linked ?? readStoredKey();
    if (stored) void this.signIn(stored, linked ? "link" : "stored");
    else this.render(false);
  }

  // ------------------------------------------------------------ session

  /** Checks a key with `GET /v1/settings`; only a key the API accepts as admin is kept. */
  private async signIn(key: string, origin: "form" | "link" | "stored") {
    const generation = ++this.generation;
    this.dispose();
    // A key from the form keeps the form (its button says "Signing in…"); one from a link or the tab's storage shows this.
    if (origin !== "form") {
      this.chrome();
      this.view.replaceChildren(h("p", { class: "muted" }, this.t.signingIn));
    }
    try {
      await new Api(key).settings();
    } catch (error) {
      if (generation !== this.generation) return;
      this.api = null;
      if (error instanceof Problem && (error.status === 401 || error.status === 403)) {
        forgetKey();
        const reason: Key =
          error.status === 403
            ? error.code === "INSUFFICIENT_SCOPE"
              ? "keyNotAdmin"
              : "failed"
            : origin === "stored"
              ? "sessionEnded"
              : "keyInvalid";
        this.message = { tone: "error", text: (t) => (reason === "failed" ? problemText(t, error) : t[reason]) };
      } else {
        // The key may be fine and the gateway down: say so, keep nothing new.
        this.message = { tone: "error", text: (t) => problemText(t, error) };
      }
      this.render(false);
      if (origin === "form") this.focusKeyInput(true);
      return;
    }
    if (generation !== this.generation) return;
    storeKey(key);
    this.api = new Api(key, () => this.expired());
    this.message = null;
    this.render(origin === "form");
  }

  /** A 401 while signed in: the key was revoked or rotated meanwhile. */
  private expired() {
    if (!this.api) return;
    forgetKey();
    this.api = null;
    this.message = { tone: "error", text: (t) => t.sessionEnded };
    this.render(false);
  }

  private signOut() {
    forgetKey();
    this.api = null;
    this.message = { tone: "info", text: (t) => t.signedOut };
    this.render(false);
    this.focusKeyInput(false);
  }

  private focusKeyInput(invalid: boolean) {
    const input = this.view.querySelector<HTMLInputElement>("#api-key");
    if (!input) return;
    if (invalid) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", "api-key-hint console-status");
    }
    input.focus();
  }

  // ------------------------------------------------------------ language

  private setLang(value: string) {
    if (!isLang(value) || value === this.lang) return;
    this.lang = value;
    this.t = CATALOG[value];
    try {
      localStorage.setItem(LANG_STORAGE, value);
    } catch {
      // Storage refused (a private window): the choice holds for this page only.
    }
    this.render(false);
    this.languageSelect.focus();
  }

  // ------------------------------------------------------------ rendering

  /** The chrome in the current language, then the view. */
  private render(focusHeading: boolean) {
    this.chrome();
    this.mount(focusHeading);
  }

  /** The page's language, the header and the footer. */
  private chrome() {
    const t = this.t;
    document.documentElement.lang = this.lang;
    this.brand.textContent = t.appName;
    this.languageLabel.textContent = t.language;
    this.languageSelect.value = this.lang;
    this.signOutButton.textContent = t.signOut;
    this.signOutButton.hidden = !this.api;
    this.skip.textContent = t.skipToContent;
    this.licenses.textContent = t.licenses;
  }

  /** Replaces the view with the one the address names (or the sign-in form). */
  private mount(focusHeading: boolean) {
    const t = this.t;
    const generation = ++this.generation;
    this.dispose();
    this.showMessage();
    const route = parse(location.hash);
    this.renderNav(route);
    const root = this.view;
    root.replaceChildren();
    if (!this.api) {
      document.title = `${t.signInTitle} – ${t.appName}`;
      root.append(...signInForm(t, (key) => void this.signIn(key, "form")));
      if (focusHeading) root.querySelector<HTMLElement>("h1")?.focus();
      return;
    }
    const section = SECTIONS.find((s) => s.view === route.view) ?? SECTIONS[0];
    document.title = `${t[section.title]} – ${t.appName}`;
    const context: Context = {
      api: this.api,
      lang: this.lang,
      t,
      fmt: formats(this.lang),
      say: (text, tone = "info") => {
        if (generation !== this.generation) return;
        this.message = { tone, text: () => text };
        this.showMessage();
      },
      fail: (error) => {
        if (generation !== this.generation || !this.api) return;
        if (error instanceof Problem && error.status === 401) return;
        this.message = { tone: "error", text: (words) => problemText(words, error) };
        this.showMessage();
      },
      alive: () => generation === this.generation && this.api !== null,
      navigate: (next: Route) => {
        const target = href(next);
        if (location.hash !== target) location.hash = target;
        else {
          // The same address again (a second look-up of the same customer): read it afresh.
          this.message = null;
          this.mount(true);
        }
      },
      onDispose: (cleanup) => this.cleanups.push(cleanup),
    };
    (section.render as View)(context, route, root);
    if (focusHeading) root.querySelector<HTMLElement>("h1")?.focus();
  }

  private renderNav(route: Route) {
    if (!this.api) {
      this.nav.hidden = true;
      this.nav.replaceChildren();
      return;
    }
    this.nav.hidden = false;
    this.nav.setAttribute("aria-label", this.t.navLabel);
    this.nav.replaceChildren(
      h(
        "ul",
        {},
        ...SECTIONS.map((section) =>
          h(
            "li",
            {},
            h(
              "a",
              {
                href: href(section.home),
                "aria-current": section.view === route.view ? "page" : null,
                "data-testid": `nav-${section.view}`,
              },
              this.t[section.label],
            ),
          ),
        ),
      ),
    );
  }

  private showMessage() {
    const message = this.message;
    this.status.className = message ? `status ${message.tone}` : "status";
    this.status.textContent = message ? message.text(this.t) : "";
  }

  private dispose() {
    for (const cleanup of this.cleanups.splice(0)) {
      try {
        cleanup();
      } catch {
        // A view's clean-up must not stop the next view.
      }
    }
  }
}

function initialLang(): Lang {
  try {
    const saved = localStorage.getItem(LANG_STORAGE);
    if (isLang(saved)) return saved;
  } catch {
    // No storage: the browser's language.
  }
  return pickLang(navigator.language || "en");
}

/** The key of a one-time sign-in link (`#key=…`), removed from the address bar (and history) at once. */
function takeLinkKey(): string | null {
  if (!location.hash.startsWith("#key=")) return null;
  const raw = location.hash.slice("#key=".length);
  history.replaceState(null, "", location.pathname + location.search);
  let key = raw;
  try {
    key = decodeURIComponent(raw);
  } catch {
    // Not percent-encoded: as it is.
  }
  return key.trim() || null;
}

function readStoredKey(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

function storeKey(key: string) {
  try {
    sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    // Storage refused: signed in for this page only.
  }
}

function forgetKey() {
  try {
    sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Nothing stored.
  }
}

const host = document.getElementById("console");
if (host) new AdminConsole(host).start();
