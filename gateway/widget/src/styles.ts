// The widget's look. Every colour, the font, the radius and the spacing come
// from CSS custom properties, which cross the shadow boundary, so a shop sets
// them on `loyalty-widget { --loyalty-accent: #7a2e8e; }` in its own styles.
// The defaults meet WCAG AA contrast (4.5:1 for text).

export const STYLES = `
:host {
  display: block;
  font-family: var(--loyalty-font, system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif);
  color: var(--loyalty-text, #1f2328);
  line-height: 1.5;
  font-size: var(--loyalty-font-size, 1rem);
}
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
.card {
  background: var(--loyalty-background, #ffffff);
  border: 1px solid var(--loyalty-border, #d0d7de);
  border-radius: var(--loyalty-radius, 12px);
  padding: var(--loyalty-spacing, 1rem);
  display: grid;
  gap: var(--loyalty-spacing, 1rem);
}
h2, h3, h4 { margin: 0; line-height: 1.25; }
h4 { font-size: 0.95em; }
h2 { font-size: 1.25em; }
h3 { font-size: 1.05em; }
p { margin: 0; }
ul { margin: 0; padding: 0; list-style: none; display: grid; gap: 0.5rem; }
section { display: grid; gap: 0.5rem; }
.muted { color: var(--loyalty-muted, #57606a); font-size: 0.9em; }
ul.perks { list-style: disc; padding-left: 1.25rem; gap: 0.25rem; }
.badge {
  display: inline-block;
  padding: 0 0.4em;
  border: 1px solid var(--loyalty-accent, #0a58ca);
  border-radius: calc(var(--loyalty-radius, 12px) / 3);
  font-size: 0.8em;
}
.balance { display: flex; flex-wrap: wrap; gap: 1rem 2rem; align-items: baseline; }
.big { font-size: 2em; font-weight: 700; color: var(--loyalty-accent, #0a58ca); }
.row { display: flex; gap: 0.5rem; align-items: center; justify-content: space-between; flex-wrap: wrap; }
.notice {
  border-radius: calc(var(--loyalty-radius, 12px) / 2);
  padding: 0.75rem;
  background: var(--loyalty-notice-background, #fff8c5);
  color: var(--loyalty-notice-text, #3b2300);
  border: 1px solid var(--loyalty-notice-border, #d4a72c);
}
.notice:empty { display: none; }
.progress {
  height: 0.6rem;
  border-radius: 999px;
  background: var(--loyalty-track, #d8dee4);
  overflow: hidden;
}
.progress > div { height: 100%; background: var(--loyalty-accent, #0a58ca); }
button, .button {
  font: inherit;
  cursor: pointer;
  border-radius: calc(var(--loyalty-radius, 12px) / 2);
  padding: 0.4rem 0.9rem;
  border: 1px solid var(--loyalty-accent, #0a58ca);
  background: var(--loyalty-accent, #0a58ca);
  color: var(--loyalty-accent-text, #ffffff);
  text-decoration: none;
  display: inline-block;
}
button.secondary, .button.secondary {
  background: transparent;
  color: var(--loyalty-accent, #0a58ca);
}
button[disabled] { opacity: 0.7; cursor: progress; }
button:focus-visible, .button:focus-visible, input:focus-visible, select:focus-visible, [tabindex="-1"]:focus-visible {
  outline: 3px solid var(--loyalty-focus, #bf3989);
  outline-offset: 2px;
}
input {
  font: inherit;
  color: inherit;
  background: var(--loyalty-background, #ffffff);
  border: 1px solid var(--loyalty-border, #d0d7de);
  border-radius: calc(var(--loyalty-radius, 12px) / 2);
  padding: 0.35rem 0.5rem;
  min-width: 0;
  flex: 1 1 12rem;
}
.voucher {
  border: 2px dashed var(--loyalty-accent, #0a58ca);
  border-radius: calc(var(--loyalty-radius, 12px) / 2);
  padding: 0.75rem;
  display: grid;
  gap: 0.5rem;
}
.code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 1.3em; letter-spacing: 0.08em; }
.stats { display: flex; gap: 1.5rem; flex-wrap: wrap; }
.stats dt { font-size: 0.9em; color: var(--loyalty-muted, #57606a); }
.stats dd { margin: 0; font-weight: 700; }
ol.steps { margin: 0; padding-left: 1.25rem; display: grid; gap: 0.25rem; }
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
`;
