// The audit log: every change to the program's settings and campaigns, to a
// customer's profile, and every export and erasure of a customer's data,
// newest first, filtered by actor and kind (exact matches, on the server).

import { AUDIT_ENTITIES, AuditEntry } from "./api";
import { Context, View } from "./context";
import { Child, field, h, table } from "./dom";
import { counted, named } from "./i18n";
import { pager } from "./pager";
import { Route } from "./router";

type AuditRoute = Extract<Route, { view: "audit" }>;

/** How long one value may run in the change list before it is cut. */
const LONGEST_VALUE = 120;

export const auditView: View<AuditRoute> = (context, route, root) => {
  const { t, fmt } = context;
  const actorInput = h("input", { type: "text", autocomplete: "off", spellcheck: "false", value: route.actor });
  const actor = field("audit-actor", t.filterActor, actorInput, t.filterActorHint);
  const kindSelect = h(
    "select",
    {},
    h("option", { value: "" }, t.kindAll),
    ...AUDIT_ENTITIES.map((entity) => h("option", { value: entity }, named(t, "entity", entity))),
  );
  kindSelect.value = route.entity;
  const kind = field("audit-entity", t.filterKind, kindSelect);
  const form = h(
    "form",
    { class: "inline", novalidate: true, "data-testid": "audit-filters" },
    actor.block,
    kind.block,
    h("div", { class: "actions" }, h("button", { type: "submit" }, t.applyFilters)),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    context.navigate({ view: "audit", actor: actorInput.value.trim(), entity: kindSelect.value });
  });

  const entries = table(
    [{ label: t.colWhen }, { label: t.colActor }, { label: t.colKind }, { label: t.colSubject }, { label: t.colChange }],
    t.auditTitle,
  );
  const empty = h("p", { class: "muted", "data-testid": "audit-empty" }, t.auditEmpty);
  const heading = h("h1", { tabindex: "-1" }, t.auditTitle);
  const list = pager<AuditEntry>(context, {
    body: entries.body,
    table: entries.table,
    empty,
    read: (token) => context.api.audit({ actor: route.actor, entity: route.entity }, token),
    row: (entry) =>
      h(
        "tr",
        { "data-testid": "audit-row", "data-entity": entry.entity, "data-actor": entry.actor },
        h("td", { class: "when" }, fmt.dateTime(entry.changed_at)),
        h("td", { class: "code" }, entry.actor),
        h("td", {}, named(t, "entity", entry.entity)),
        h("td", { class: "code" }, entry.entity_id),
        h("td", {}, change(context, entry)),
      ),
    focusAfter: heading,
    testid: "audit",
  });
  root.append(
    heading,
    h("section", { class: "panel", "aria-labelledby": "filters-heading" }, h("h2", { id: "filters-heading" }, t.filtersTitle), form),
    h("section", { class: "panel", "aria-label": t.auditTitle }, entries.table, empty, list.more),
  );
  list.reload().catch((error: unknown) => context.fail(error));
};

/** What changed, field by field (`earn_rate.points: 1 → 2`), behind a disclosure. */
function change(context: Context, entry: AuditEntry): Child {
  const { t } = context;
  if (entry.old_value === undefined && entry.new_value === undefined) return "—";
  if (entry.old_value === undefined) return t.created;
  if (entry.new_value === undefined) return t.removedValue;
  const before = flatten(entry.old_value);
  const after = flatten(entry.new_value);
  const paths = [...new Set([...before.keys(), ...after.keys()])].filter((path) => before.get(path) !== after.get(path)).sort();
  if (paths.length === 0) return t.noChange;
  const count = counted(t, context.lang, "fieldsChanged", paths.length, { count: context.fmt.number(paths.length) });
  return h(
    "details",
    {},
    h("summary", {}, count),
    h(
      "ul",
      { class: "changes" },
      ...paths.map((path) => h("li", {}, h("code", {}, path), ": ", h("code", {}, cut(before.get(path) ?? "—")), " → ", h("code", {}, cut(after.get(path) ?? "—")))),
    ),
  );
}

/** Leaf values by dotted path; lists stay whole (as JSON), they rarely change one item at a time. */
function flatten(value: unknown, prefix = "", into = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 0 && prefix) into.set(prefix, "{}");
    for (const key of keys) flatten((value as Record<string, unknown>)[key], prefix ? `${prefix}.${key}` : key, into);
  } else {
    into.set(prefix || "·", JSON.stringify(value));
  }
  return into;
}

function cut(text: string): string {
  return text.length > LONGEST_VALUE ? `${text.slice(0, LONGEST_VALUE - 1)}…` : text;
}
