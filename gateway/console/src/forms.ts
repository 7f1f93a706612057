// What the program's forms share: fields made one way, read and checked as
// the API checks them (whole numbers within the bounds the models and
// constraints.rs state, required text, patterns) before anything is sent, the
// API's own field errors put next to the fields they name, and the warning
// that what a form was loaded from changed meanwhile. The rules that weigh one
// field against another (expiry after the return window, thresholds rising,
// a campaign's end after its start) are the API's to say: its answer lands by
// the field all the same.

import { Action, Problem } from "./api";
import { Context, problemText } from "./context";
import { Attributes, checkbox, Field, field, h } from "./dom";
import { fill } from "./i18n";

/** Largest points of one command, and the largest amount of an order in minor units (constraints.rs). */
export const MAX_POINTS = 1_000_000_000;
export const MAX_AMOUNT_MINOR = 1_000_000_000_000;
/** The longest window, period or validity a program may set, in days. */
export const MAX_DAYS = 3_660;
/** A 32-bit count (`cap_count`, `per_customer_limit`). */
export const MAX_INT32 = 2_147_483_647;
/** An activity type, a campaign's target or a tier's flag: `order`, `review`, `free_returns`. */
export const ACTIVITY_TYPE = /^[a-z0-9_-]{1,64}$/;
/** An ISO 4217 code as the API takes it. */
export const CURRENCY = /^[A-Z]{3}$/;
/** The longest id (a tier, a reward's SKU). */
export const MAX_ID_CHARS = 128;

export function numberField(id: string, label: string, value: number | undefined, hint?: string): Field {
  const input = h("input", { type: "number", step: "1", inputmode: "numeric", autocomplete: "off", class: "number" });
  if (value !== undefined) input.value = String(value);
  return field(id, label, input, hint);
}

export function textField(id: string, label: string, value: string, hint?: string, attributes: Attributes = {}): Field {
  const input = h("input", { type: "text", autocomplete: "off", ...attributes });
  input.value = value;
  return field(id, label, input, hint);
}

export function areaField(id: string, label: string, value: string, hint?: string): Field {
  const input = h("textarea", { rows: 3 });
  input.value = value;
  return field(id, label, input, hint);
}

export function selectField(id: string, label: string, options: [string, string][], value: string, hint?: string): Field {
  const input = h("select", {}, ...options.map(([option, text]) => h("option", { value: option }, text)));
  input.value = value;
  return field(id, label, input, hint);
}

/** Checkboxes for a set of values, in a fieldset; its `input` (where focus goes on an error) is the first box. */
export interface Choices extends Field {
  values(): string[];
}

export function choicesField(id: string, legend: string, options: [string, string][], chosen: string[], hint?: string): Choices {
  const boxes = options.map(([value, text], i) => checkbox(`${id}-${i}`, text, chosen.includes(value)));
  const error = h("p", { id: `${id}-error`, class: "field-error", "data-testid": `${id}-error` });
  error.hidden = true;
  const hintNode = hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null;
  const block = h(
    "fieldset",
    { class: "choices", id, "aria-describedby": hintNode ? hintNode.id : null },
    h("legend", {}, legend),
    hintNode,
    h("div", { class: "fields" }, ...boxes.map((box) => box.block)),
    error,
  );
  return {
    block,
    input: boxes[0]?.input ?? h("input", { type: "checkbox", hidden: true }),
    invalid(message) {
      error.textContent = message ?? "";
      error.hidden = !message;
      const ids = [hintNode?.id, message ? error.id : ""].filter(Boolean).join(" ");
      if (ids) block.setAttribute("aria-describedby", ids);
      else block.removeAttribute("aria-describedby");
    },
    values: () => options.filter((_, i) => (boxes[i].input as HTMLInputElement).checked).map(([value]) => value),
  };
}

interface TextRule {
  required?: boolean;
  /** Characters at most. */
  max?: number;
  pattern?: RegExp;
  /** Why a value does not match `pattern`. */
  message?: string;
  /** Read in capitals (a currency). */
  upper?: boolean;
}

/**
 * One submission's reading of a form: each value read is checked as the API
 * would check it and remembered under the name the API gives its field
 * (`earn_rate.points`, `activity_rules[2].points`), so a refusal's field
 * errors find their fields.
 */
export class Checker {
  private readonly fields = new Map<string, Field>();
  private first: Field | null = null;

  constructor(private readonly context: Context) {}

  /** A whole number from `min` to `max`; NaN, with the reason shown, when it is not one. */
  integer(path: string, f: Field, min: number, max: number): number {
    this.take(path, f);
    const { t, fmt } = this.context;
    const raw = f.input.value.trim();
    const unreadable = f.input instanceof HTMLInputElement && f.input.validity.badInput;
    if (raw === "" && !unreadable) return this.refuse(f, t.numberRequired);
    const value = Number(raw);
    if (unreadable || !/^[-+]?\d+$/.test(raw) || !Number.isSafeInteger(value)) return this.refuse(f, t.wholeNumber);
    if (value < min || value > max) {
      const message = max >= MAX_INT32 ? fill(t.numberAtLeast, { min: fmt.number(min) }) : fill(t.numberRange, { min: fmt.number(min), max: fmt.number(max) });
      return this.refuse(f, message);
    }
    return value;
  }

  /** A whole number, or undefined when left empty. */
  optionalInteger(path: string, f: Field, min: number, max: number): number | undefined {
    const unreadable = f.input instanceof HTMLInputElement && f.input.validity.badInput;
    if (f.input.value.trim() === "" && !unreadable) {
      this.take(path, f);
      return undefined;
    }
    return this.integer(path, f, min, max);
  }

  text(path: string, f: Field, rule: TextRule = {}): string {
    this.take(path, f);
    const { t, fmt } = this.context;
    let value = f.input.value.trim();
    if (rule.upper) value = value.toUpperCase();
    if (!value) {
      if (rule.required) this.refuse(f, t.required);
      return value;
    }
    if (rule.max !== undefined && [...value].length > rule.max) this.refuse(f, fill(t.tooLong, { max: fmt.number(rule.max) }));
    else if (rule.pattern && !rule.pattern.test(value)) this.refuse(f, rule.message ?? t.invalidValue);
    return value;
  }

  /** Items one per line (or separated by `separator`), blanks dropped, each checked by `ok`; at most `most`. */
  list(path: string, f: Field, separator: RegExp, most: number, ok: (item: string) => boolean, message: string): string[] {
    this.take(path, f);
    const items = f.input.value
      .split(separator)
      .map((item) => item.trim())
      .filter(Boolean);
    if (items.length > most || !items.every(ok) || new Set(items).size !== items.length) this.refuse(f, message);
    return items;
  }

  /** A select's value. */
  choice<T extends string>(path: string, f: Field): T {
    this.take(path, f);
    return f.input.value as T;
  }

  checked(path: string, f: Field): boolean {
    this.take(path, f);
    return (f.input as HTMLInputElement).checked;
  }

  /** A `datetime-local` value as an RFC 3339 instant (UTC). */
  moment(path: string, f: Field): string {
    this.take(path, f);
    const value = f.input.value;
    const at = value ? new Date(value) : null;
    if (!at || Number.isNaN(at.getTime())) {
      this.refuse(f, this.context.t.momentRequired);
      return "";
    }
    return at.toISOString();
  }

  /** Checkboxes' values, remembered under `path` (the API names an item `path[i]`). */
  chosen(path: string, f: Choices): string[] {
    this.take(path, f);
    return f.values();
  }

  /** Shows `message` by the field; the first field refused gets the focus when the form is not sent. */
  refuse(f: Field, message: string): number {
    f.invalid(message);
    this.first ??= f;
    return Number.NaN;
  }

  /** True when every value passed; else the first field refused is focused. */
  passed(): boolean {
    this.first?.input.focus();
    return this.first === null;
  }

  /**
   * The API's field errors by their fields (`tier_ids[1]` by the tier
   * choices, `tiers[0].perks` by that tier's perks); the first field named
   * gets the focus. Errors no field takes are in the status message, which
   * carries the problem's whole detail.
   */
  refused(problem: Problem): void {
    const messages = new Map<Field, string[]>();
    for (const error of problem.errors) {
      const target = this.find(error.field);
      if (target) messages.set(target, [...(messages.get(target) ?? []), error.description]);
    }
    for (const [target, texts] of messages) target.invalid(texts.join(" · "));
    [...messages.keys()][0]?.input.focus();
  }

  private take(path: string, f: Field) {
    this.fields.set(path, f);
    f.invalid(null);
  }

  /** The field named, or the nearest that holds it (`a[2].b` → `a[2]` → `a`). */
  private find(path: string): Field | undefined {
    let name = path;
    for (;;) {
      const found = this.fields.get(name);
      if (found) return found;
      const shorter = name.replace(/(\[\d+\]|\.[^.[\]]+)$/, "");
      if (shorter === name) return undefined;
      name = shorter;
    }
  }
}

/** 409 `VERSION_MISMATCH`: what the form was loaded from changed meanwhile. */
export function changedMeanwhile(error: unknown): boolean {
  return error instanceof Problem && error.status === 409 && error.code === "VERSION_MISMATCH";
}

/**
 * The warning for a save refused because the thing changed meanwhile:
 * nothing was saved and nothing is sent again; Reload shows what is stored
 * now. It takes the focus (the Save button under it is disabled).
 */
export function conflictNotice(context: Context, reload: () => void): HTMLElement {
  const { t } = context;
  const button = h("button", { type: "button", class: "secondary", "data-testid": "conflict-reload" }, t.reloadCurrent);
  button.addEventListener("click", reload);
  return h(
    "div",
    { class: "notice conflict", role: "alert", tabindex: "-1", "data-testid": "conflict" },
    h("p", {}, h("strong", {}, t.changedTitle), " ", t.changedMeanwhile),
    h("div", {}, button),
  );
}

/** How one form saves: see `onSave`. */
export interface Save<B, T> {
  form: HTMLFormElement;
  submit: HTMLButtonElement;
  /** Where the "changed meanwhile" warning goes. */
  conflict: HTMLElement;
  /** The warning's Reload: shows what is stored now. */
  reload: () => void;
  /** Reads the form into the body to send, each value checked by `check`; nothing is sent unless all passed. */
  read: (check: Checker) => B;
  /** Before sending: throws (a 409 `VERSION_MISMATCH` for a change made meanwhile) to stop the save. */
  confirm?: () => Promise<void>;
  /** Sends `body` with the action's Idempotency-Key. */
  send: (body: B, key: string) => Promise<T>;
  /** What the save answered: the status message, the form shown again from it. */
  saved: (answer: T) => void | Promise<void>;
}

/**
 * A form's save, the same for every form: its values are checked before
 * anything is sent; the body goes with the action's Idempotency-Key (kept for
 * a retry after an outage, new after an answer); a 409 `VERSION_MISMATCH`
 * shows the warning and leaves the form stale, never sent again; any other
 * refusal goes to the status message and its field errors by their fields.
 */
export function onSave<B, T>(context: Context, save: Save<B, T>): void {
  const { form, submit, conflict } = save;
  const action = new Action();
  let stale = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (stale) return;
    const check = new Checker(context);
    const body = save.read(check);
    if (!check.passed()) return;
    const done = busy(submit, context.t.saving);
    try {
      if (save.confirm) await save.confirm();
      const answer = await save.send(body, action.keyFor(body));
      action.settled();
      if (!context.alive()) return;
      await save.saved(answer);
    } catch (error) {
      action.settled(error);
      if (!context.alive()) return;
      if (changedMeanwhile(error)) {
        // Never sent again as it is: the admin reloads, sees the other change and decides.
        stale = true;
        const notice = conflictNotice(context, save.reload);
        conflict.replaceChildren(notice);
        submit.disabled = true;
        notice.focus();
        return;
      }
      context.fail(error);
      if (error instanceof Problem) check.refused(error);
    } finally {
      done();
      submit.disabled = stale;
    }
  });
}

/** A part the API cannot serve: its service is not configured here (503 `BACKEND_NOT_CONFIGURED`), or it failed. */
export function unavailable(context: Context, error: unknown, service: string): HTMLElement {
  const { t } = context;
  const text =
    error instanceof Problem && error.status === 503 && error.code === "BACKEND_NOT_CONFIGURED"
      ? fill(t.notConfigured, { service })
      : fill(t.partUnavailable, { detail: problemText(t, error) });
  return h("p", { class: "notice", "data-testid": "part-unavailable" }, text);
}

/** The hint of an amount in minor units: "100 is 1.00". */
export function minorHint(context: Context): string {
  const major = new Intl.NumberFormat(context.lang, { minimumFractionDigits: 2 }).format(1);
  return fill(context.t.minorHint, { minor: context.fmt.number(100), major });
}

/** A moment as a `datetime-local` input shows it: this browser's time zone, to the minute. */
export function localMoment(at: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())}T${two(at.getHours())}:${two(at.getMinutes())}`;
}

/** While a write is under way: the button says so and cannot be pressed again. */
export function busy(button: HTMLButtonElement, text: string): () => void {
  const before = button.textContent;
  button.disabled = true;
  button.textContent = text;
  return () => {
    button.disabled = false;
    button.textContent = before;
  };
}

/**
 * Reads what a part shows and renders it; a failed read leaves a notice in
 * the part (and the status says why). `render` may be called again later
 * with what a save answered.
 */
export async function loadPart<T>(context: Context, body: HTMLElement, read: () => Promise<T>, render: (value: T) => Node[], failed: (error: unknown) => Node[]): Promise<void> {
  body.setAttribute("aria-busy", "true");
  try {
    const value = await read();
    if (!context.alive()) return;
    body.replaceChildren(...render(value));
  } catch (error) {
    if (!context.alive()) return;
    body.replaceChildren(...failed(error));
    context.fail(error);
  } finally {
    body.setAttribute("aria-busy", "false");
  }
}
