// The console's look, injected as one <style> (the page's CSP allows inline
// styles, and the gateway serves no stylesheet). uPlot's own rules come in as
// text from its package, so the bundle needs nothing from elsewhere. Colours
// meet WCAG AA: 4.5:1 for text, 3:1 for borders and focus rings.

import UPLOT_CSS from "uplot/dist/uPlot.min.css";

const CONSOLE_CSS = `
:root {
  --text: #1f2328;
  --muted: #57606a;
  --border: #d0d7de;
  --field-border: #6e7781;
  --accent: #0a58ca;
  --accent-text: #ffffff;
  --focus: #bf3989;
  --danger: #b42318;
  --page: #f6f8fa;
  --panel: #ffffff;
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body {
  margin: 0;
  background: var(--page);
  color: var(--text);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", "WenQuanYi Zen Hei", sans-serif;
  font-size: 1rem;
  line-height: 1.5;
}
a { color: var(--accent); }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
h1, h2, h3 { line-height: 1.25; margin: 0; }
h1 { font-size: 1.6rem; }
h2 { font-size: 1.25rem; }
h3 { font-size: 1.05rem; }
p { margin: 0; }
.skip {
  position: absolute; left: 0.5rem; top: -3rem; z-index: 10;
  background: var(--panel); padding: 0.5rem 0.75rem; border: 2px solid var(--accent); border-radius: 6px;
}
.skip:focus { top: 0.5rem; }
.top { background: var(--panel); border-bottom: 1px solid var(--border); }
.top-row, .top nav ul, main, .bottom {
  max-width: 1200px; margin: 0 auto; padding-left: 1rem; padding-right: 1rem;
}
.top-row { display: flex; flex-wrap: wrap; gap: 0.75rem 1.5rem; align-items: center; padding-top: 0.75rem; padding-bottom: 0.75rem; }
.brand { font-weight: 700; font-size: 1.1rem; margin-right: auto; }
.language { display: flex; gap: 0.5rem; align-items: center; }
.top nav ul { list-style: none; display: flex; flex-wrap: wrap; gap: 0.25rem; margin-top: 0; margin-bottom: 0; }
.top nav a {
  display: inline-block; padding: 0.5rem 0.9rem; text-decoration: none; color: var(--accent);
  border-bottom: 3px solid transparent; font-weight: 600;
}
.top nav a[aria-current="page"] { color: var(--text); border-bottom-color: var(--accent); }
.top nav a:hover { text-decoration: underline; }
main { padding-top: 1.25rem; padding-bottom: 2rem; display: grid; gap: 1rem; }
main:focus { outline: none; }
.view { display: grid; gap: 1.25rem; }
.view > h1:focus { outline: none; }
.panel {
  background: var(--panel); border: 1px solid var(--border); border-radius: 8px; padding: 1rem;
  display: grid; gap: 0.75rem; align-content: start; min-width: 0;
}
.columns { display: grid; gap: 1rem; grid-template-columns: repeat(auto-fit, minmax(18rem, 1fr)); align-items: start; }
.status { border-radius: 6px; padding: 0.6rem 0.9rem; border: 1px solid transparent; }
.status:empty { padding: 0; border: 0; }
.status.error { background: #ffebe9; border-color: #cf222e; color: #82071e; }
.status.info { background: #dafbe1; border-color: #1a7f37; color: #0f5323; }
.notice { background: #fff8c5; color: #3b2300; border: 1px solid #9a6700; border-radius: 6px; padding: 0.6rem 0.9rem; }
.muted, .hint { color: var(--muted); font-size: 0.9em; }
button, select, input, textarea { font: inherit; color: inherit; }
button {
  cursor: pointer; border-radius: 6px; padding: 0.4rem 0.9rem;
  border: 1px solid var(--accent); background: var(--accent); color: var(--accent-text);
}
button.secondary { background: var(--panel); color: var(--accent); }
button.danger { background: var(--panel); color: var(--danger); border-color: var(--danger); }
button[disabled] { opacity: 0.7; cursor: progress; }
input, select, textarea {
  background: var(--panel); border: 1px solid var(--field-border); border-radius: 6px; padding: 0.4rem 0.5rem; min-width: 0;
}
input[aria-invalid="true"], select[aria-invalid="true"], textarea[aria-invalid="true"] { border-color: var(--danger); border-width: 2px; }
input[readonly] { background: var(--page); }
input.number { width: 10rem; }
input.short { width: 5rem; }
textarea { width: min(100%, 32rem); resize: vertical; }
form.inline { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: flex-start; }
/* A row's button lines up with the inputs under their one-line labels. */
form.inline > .actions { padding-top: calc(1.5em + 0.25rem); }
.field { display: grid; gap: 0.25rem; align-content: start; }
.field label { font-weight: 600; }
.field-error { color: var(--danger); font-size: 0.9em; font-weight: 600; }
.check-row { display: flex; gap: 0.5rem; align-items: center; }
.check-row input { width: 1.1rem; height: 1.1rem; margin: 0; }
.field.check label { font-weight: 400; }
form.stacked { display: grid; gap: 1rem; }
form.stacked .actions { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: center; }
fieldset { border: 1px solid var(--border); border-radius: 8px; padding: 0.75rem 1rem 1rem; margin: 0; display: grid; gap: 0.75rem; min-width: 0; }
legend { font-weight: 700; padding: 0 0.25rem; }
fieldset.row, fieldset.choices { background: var(--page); }
fieldset.choices legend { font-weight: 600; }
.fields { display: flex; flex-wrap: wrap; gap: 0.75rem 1.25rem; align-items: flex-start; }
.fields > .field { max-width: 22rem; }
/* A checkbox in a row of fields lines up with the inputs under their one-line labels. */
.fields > .field.check { padding-top: calc(1.5em + 0.25rem); }
fieldset.choices .fields > .field.check { padding-top: 0; }
.rows { display: grid; gap: 0.75rem; }
.row-actions { display: flex; flex-wrap: wrap; gap: 0.5rem; }
td.row-actions { display: table-cell; white-space: nowrap; }
td.row-actions button + button { margin-left: 0.5rem; }
.hint.block { display: block; font-weight: 400; }
.conflict { display: grid; gap: 0.5rem; }
.conflict:focus { outline: 3px solid var(--focus); outline-offset: 2px; }
.subnav ul { list-style: none; display: flex; flex-wrap: wrap; gap: 0.5rem; margin: 0; padding: 0; }
.subnav a { display: inline-block; padding: 0.35rem 0.8rem; border: 1px solid var(--border); border-radius: 999px; text-decoration: none; background: var(--panel); font-weight: 600; }
.subnav a[aria-current="page"] { background: var(--accent); border-color: var(--accent); color: var(--accent-text); }
.subnav a:hover { text-decoration: underline; }
.badge { display: inline-block; padding: 0.05rem 0.55rem; border-radius: 999px; border: 1px solid var(--field-border); font-size: 0.85em; font-weight: 600; white-space: nowrap; }
.badge.active { background: #dafbe1; border-color: #1a7f37; color: #0f5323; }
.badge.upcoming { background: #ddf4ff; border-color: #0969da; color: #0a3069; }
.badge.ended { background: #eaeef2; color: var(--muted); }
.signin { max-width: 32rem; }
.signin input { width: 100%; }
.kpis { display: grid; gap: 0.75rem; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); margin: 0; }
.kpis > div { background: var(--panel); border: 1px solid var(--border); border-radius: 8px; padding: 0.75rem 1rem; }
.kpis dt { color: var(--muted); font-size: 0.9em; }
.kpis dd { margin: 0; font-size: 1.6rem; font-weight: 700; font-variant-numeric: tabular-nums; }
.kpis dd .hint { display: block; font-size: 0.8rem; font-weight: 400; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; margin: 0; }
.facts > div { display: contents; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
.big { font-size: 1.6rem; font-weight: 700; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: start; padding: 0.4rem 0.6rem; border-bottom: 1px solid var(--border); vertical-align: top; overflow-wrap: break-word; }
td.code { overflow-wrap: anywhere; }
.when { white-space: nowrap; }
thead th { font-size: 0.9em; color: var(--muted); }
.num { text-align: end; font-variant-numeric: tabular-nums; white-space: nowrap; }
.code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
figure { margin: 0; display: grid; gap: 0.5rem; min-width: 0; }
figcaption { font-weight: 600; }
.plot { width: 100%; min-height: 260px; }
.legend { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 0.25rem 1.25rem; font-size: 0.9em; }
.swatch { display: inline-block; width: 1.6rem; border-top-width: 3px; vertical-align: middle; margin-right: 0.4rem; }
summary { cursor: pointer; color: var(--accent); }
details[open] > summary { margin-bottom: 0.5rem; }
.bar-track { display: inline-block; width: 8rem; height: 0.7rem; background: #eaeef2; border-radius: 3px; vertical-align: middle; margin-right: 0.5rem; overflow: hidden; }
.bar { display: block; height: 100%; background: var(--accent); }
.changes { margin: 0; padding-left: 1.1rem; font-size: 0.9em; }
.changes code { overflow-wrap: anywhere; }
.bottom { padding-top: 1rem; padding-bottom: 2rem; color: var(--muted); font-size: 0.85em; }
.bottom pre { white-space: pre-wrap; font-size: 0.95em; }
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
`;

export const STYLES = UPLOT_CSS + CONSOLE_CSS;
