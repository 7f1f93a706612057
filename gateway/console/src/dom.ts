// A small element builder and the few form helpers every view shares. Text is
// always set as text, never parsed as HTML: nothing the API answers (a
// customer id, a reason, an audit value) can inject markup.

export type Child = Node | string | number | null | undefined | false;
export type Attributes = Record<string, string | number | boolean | EventListener | null | undefined>;

/** `h("button", { type: "button", onclick: go }, "Go")`: `on…` attributes become listeners, `true` an empty attribute, `false`/null/undefined nothing. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Attributes = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  append(element, ...children);
  return element;
}

export function append(parent: Element, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(typeof child === "number" ? String(child) : child);
  }
}

export type Control = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** A labelled input with a place for its error, wired with `aria-describedby` and `aria-invalid`. */
export interface Field {
  /** The label, the input, the hint (if any) and the error, in one block. */
  block: HTMLElement;
  input: Control;
  /** Shows `message` next to the field (or clears it with null). */
  invalid(message: string | null): void;
}

export function field(id: string, label: string, input: Control, hint?: string): Field {
  return wired(id, input, hint, (hintNode, error) => h("div", { class: "field" }, h("label", { for: id }, label), input, hintNode, error));
}

/** A checkbox with its label beside it, its hint and its error below. */
export function checkbox(id: string, label: string, checked: boolean, hint?: string): Field {
  const input = h("input", { type: "checkbox" });
  input.checked = checked;
  return wired(id, input, hint, (hintNode, error) =>
    h("div", { class: "field check" }, h("span", { class: "check-row" }, input, h("label", { for: id }, label)), hintNode, error),
  );
}

function wired(id: string, input: Control, hint: string | undefined, layout: (hint: HTMLElement | null, error: HTMLElement) => HTMLElement): Field {
  input.id = id;
  const error = h("p", { id: `${id}-error`, class: "field-error", "data-testid": `${id}-error` });
  error.hidden = true;
  const hintNode = hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null;
  const describe = (withError: boolean) => {
    const ids = [hintNode ? hintNode.id : "", withError ? error.id : ""].filter(Boolean).join(" ");
    if (ids) input.setAttribute("aria-describedby", ids);
    else input.removeAttribute("aria-describedby");
  };
  describe(false);
  return {
    block: layout(hintNode, error),
    input,
    invalid(message) {
      error.textContent = message ?? "";
      error.hidden = !message;
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
      describe(Boolean(message));
    },
  };
}

/** A table with one header row; returns it and its body. `numeric` columns are right-aligned. */
export function table(headers: { label: string; numeric?: boolean }[], caption?: string): { table: HTMLTableElement; body: HTMLTableSectionElement } {
  const body = h("tbody");
  const element = h(
    "table",
    {},
    caption ? h("caption", { class: "sr-only" }, caption) : null,
    h("thead", {}, h("tr", {}, ...headers.map((column) => h("th", { scope: "col", class: column.numeric ? "num" : null }, column.label)))),
    body,
  );
  return { table: element, body };
}

/** A definition list of label/value pairs; values may be nodes. */
export function facts(pairs: [string, Child, string?][], className = "facts"): HTMLDListElement {
  return h(
    "dl",
    { class: className },
    ...pairs.map(([term, value, testid]) => h("div", {}, h("dt", {}, term), h("dd", { "data-testid": testid ?? null }, value))),
  );
}
