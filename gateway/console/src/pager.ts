// A newest-first list read a page at a time into a table body, with a "More"
// button while the API answers a `next_page_token`.

import { Page } from "./api";
import { Context } from "./context";
import { h } from "./dom";

export interface Pager {
  /** The "More" button, to place below the table. */
  more: HTMLButtonElement;
  /** Reads the first page again (after a change), replacing the rows. */
  reload(): Promise<void>;
}

export function pager<T>(
  context: Context,
  options: {
    body: HTMLTableSectionElement;
    /** Shown instead of the table while the list is empty. */
    empty: HTMLElement;
    table: HTMLTableElement;
    read: (token?: string) => Promise<Page<T>>;
    row: (item: T) => HTMLTableRowElement;
    /** Where focus goes when the last page arrived and "More" disappears under it. */
    focusAfter: HTMLElement;
    testid: string;
  },
): Pager {
  let next: string | undefined;
  const more = h("button", { type: "button", class: "secondary", "data-testid": `${options.testid}-more` }, context.t.more);
  more.hidden = true;
  const show = (page: Page<T>, replace: boolean) => {
    const rows = page.items.map(options.row);
    if (replace) options.body.replaceChildren(...rows);
    else options.body.append(...rows);
    next = page.next;
    more.hidden = !next;
    const empty = options.body.childElementCount === 0;
    options.table.hidden = empty;
    options.empty.hidden = !empty;
  };
  more.addEventListener("click", async () => {
    if (!next) return;
    more.disabled = true;
    try {
      const page = await options.read(next);
      if (!context.alive()) return;
      const hadFocus = document.activeElement === more;
      show(page, false);
      if (hadFocus && more.hidden) options.focusAfter.focus();
    } catch (error) {
      context.fail(error);
    } finally {
      more.disabled = false;
    }
  });
  options.table.hidden = true;
  options.empty.hidden = true;
  return {
    more,
    async reload() {
      const page = await options.read();
      if (context.alive()) show(page, true);
    },
  };
}
