// Hash routes, so the gateway serves one page for the whole console:
//
//   #/dashboard                 the program's numbers (also: no hash at all)
//   #/customers                 look a customer up
//   #/customers/<id>            one customer (the id URL-encoded)
//   #/audit[?actor=…&entity=…]  the audit log, filtered
//
// A later slice adds the program's configuration (settings, tiers, rewards,
// campaigns) as `#/program/…`: one more `Route` variant, one more nav entry in
// console.ts and one more view module.

export type Route =
  | { view: "dashboard" }
  | { view: "customers"; customer: string | null }
  | { view: "audit"; actor: string; entity: string };

export type ViewName = Route["view"];

export function parse(hash: string): Route {
  const [path, search = ""] = hash.replace(/^#/, "").split("?", 2);
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(search);
  switch (parts[0]) {
    case "customers": {
      let customer: string | null = null;
      if (parts.length > 1) {
        try {
          customer = decodeURIComponent(parts.slice(1).join("/"));
        } catch {
          customer = parts.slice(1).join("/");
        }
      }
      return { view: "customers", customer: customer || null };
    }
    case "audit":
      return { view: "audit", actor: params.get("actor") ?? "", entity: params.get("entity") ?? "" };
    default:
      return { view: "dashboard" };
  }
}

export function href(route: Route): string {
  switch (route.view) {
    case "customers":
      return route.customer ? `#/customers/${encodeURIComponent(route.customer)}` : "#/customers";
    case "audit": {
      const params = new URLSearchParams();
      if (route.actor) params.set("actor", route.actor);
      if (route.entity) params.set("entity", route.entity);
      const search = params.toString();
      return search ? `#/audit?${search}` : "#/audit";
    }
    default:
      return "#/dashboard";
  }
}
