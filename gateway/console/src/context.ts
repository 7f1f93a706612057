// What a view is handed by the console: the signed-in API, the words and
// formats of the chosen language, and the shared status region.

import { Api, Problem } from "./api";
import { fill, Formats, Lang, Strings } from "./i18n";
import { Route } from "./router";

export interface Context {
  api: Api;
  lang: Lang;
  t: Strings;
  fmt: Formats;
  /** Shows a message in the status region (`aria-live="polite"`). */
  say(text: string, tone?: "info" | "error"): void;
  /** Shows a failed call, localised; nothing once the view is gone or after a 401 (the console has signed out). */
  fail(error: unknown): void;
  /** False once another view (or another language) replaced this one: late answers are dropped. */
  alive(): boolean;
  navigate(route: Route): void;
  /** Runs when the view is replaced (charts let go of their resize observers). */
  onDispose(cleanup: () => void): void;
}

/** A view renders into `root` (which starts empty) and loads what it shows. */
export type View<R extends Route = Route> = (context: Context, route: R, root: HTMLElement) => void;

/** A failed call as a sentence: the problem's own detail after a localised prefix. */
export function problemText(t: Strings, error: unknown): string {
  if (error instanceof Problem) {
    if (error.status === 0) return t.unreachable;
    return fill(t.failed, { detail: error.detail || `${error.status} ${error.code}` });
  }
  return fill(t.failed, { detail: error instanceof Error ? error.message : String(error) });
}
