// Hash routes, so the gateway serves one page for the whole console:
//
//   #/dashboard                 the program's numbers (also: no hash at all)
//   #/customers                 look a customer up
//   #/customers/<id>            one customer (the id URL-encoded)
//   #/audit[?actor=…&entity=…]  the audit log, filtered
//   #/program                   the program's earning rules
//   #/program/<part>            its tier ladder, rewards, campaigns or referrals

/** The parts of the program's configuration, in the order of its own navigation. */
export const PROGRAM_PARTS = ["earning", "tiers", "rewards", "campaigns", "referrals"] as const;
export type ProgramPart = (typeof PROGRAM_PARTS)[number];

export type Route =
  | { view: "dashboard" }
  | { view: "customers"; customer: string | null }
  | { view: "audit"; actor: string; entity: string }
  | { view: "program"; part: ProgramPart };

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
    case "program": {
      const part = PROGRAM_PARTS.find((p) => p === parts[1]);
      return { view: "program", part: part ?? "earning" };
    }
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
    case "program":
      return route.part === "earning" ? "#/program" : `#/program/${route.part}`;
    default:
      return "#/dashboard";
  }
}
