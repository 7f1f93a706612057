// Line charts with uPlot, bundled in (no CDN). Each chart is a <figure> with
// a <figcaption>; the canvas is hidden from assistive technology because the
// figure also holds a real <table> with the same numbers (behind a
// "show the numbers" disclosure), which is what a screen reader reads.

import uPlot from "uplot";

import { Context } from "./context";
import { h, table } from "./dom";

export interface Line {
  label: string;
  values: number[];
  /** Meets 3:1 against white; lines also differ by dash, not by colour alone. */
  color: string;
  dash?: number[];
}

const HEIGHT = 260;
const TEXT = "#1f2328";
const GRID = "#d8dee4";

/** Steps between y-axis ticks: whole numbers only (points and members are counts). */
const COUNT_STEPS = [1, 2, 5].flatMap((step) => Array.from({ length: 12 }, (_, power) => step * 10 ** power)).sort((a, b) => a - b);
/** Steps between x-axis ticks, in periods. */
const PERIOD_STEPS = [1, 2, 3, 4, 5, 7, 10, 14, 15, 20, 30, 50, 100, 200];

export function lineChart(
  context: Context,
  options: {
    testid: string;
    caption: string;
    /** One label per period, the x axis and the table's first column. */
    labels: string[];
    /** Pixels a period label needs on the x axis. */
    labelWidth: number;
    firstColumn: string;
    lines: Line[];
  },
): HTMLElement {
  const { t, fmt } = context;
  const { labels, lines } = options;
  const plot = h("div", { class: "plot" });
  const legend = h(
    "ul",
    { class: "legend" },
    ...lines.map((line) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.borderTopColor = line.color;
      swatch.style.borderTopStyle = line.dash ? "dashed" : "solid";
      return h("li", {}, swatch, line.label);
    }),
  );
  const numbers = table([{ label: options.firstColumn }, ...lines.map((line) => ({ label: line.label, numeric: true }))], options.caption);
  labels.forEach((label, i) => {
    numbers.body.append(
      h("tr", {}, h("th", { scope: "row" }, label), ...lines.map((line) => h("td", { class: "num" }, fmt.number(line.values[i] ?? 0)))),
    );
  });
  const figure = h(
    "figure",
    { class: "chart", "data-testid": options.testid },
    h("figcaption", {}, options.caption),
    h("div", { "aria-hidden": "true" }, legend, plot),
    h("details", {}, h("summary", {}, t.showTable), h("div", { class: "table-wrap" }, numbers.table)),
  );

  const data: uPlot.AlignedData = [labels.map((_, i) => i), ...lines.map((line) => line.values)];
  const settings = (width: number): uPlot.Options => ({
    width,
    height: HEIGHT,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: false, range: () => [-0.5, Math.max(labels.length - 0.5, 0.5)] },
      y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? Math.ceil(max * 1.1) : 1] },
    },
    axes: [
      {
        stroke: TEXT,
        grid: { show: false },
        ticks: { stroke: GRID },
        space: options.labelWidth,
        incrs: PERIOD_STEPS,
        values: (_u, splits) => splits.map((i) => (Number.isInteger(i) ? (labels[i] ?? "") : "")),
      },
      {
        stroke: TEXT,
        grid: { stroke: GRID, width: 1 },
        ticks: { stroke: GRID },
        size: 64,
        incrs: COUNT_STEPS,
        values: (_u, splits) => splits.map((value) => fmt.number(value)),
      },
    ],
    series: [
      {},
      ...lines.map((line) => ({
        label: line.label,
        stroke: line.color,
        width: 2,
        dash: line.dash,
        points: { show: labels.length <= 31, size: 5, fill: line.color },
      })),
    ],
  });

  // uPlot draws at a width in pixels: made once the figure is laid out, resized with it.
  let chart: uPlot | null = null;
  const observer = new ResizeObserver((entries) => {
    const width = Math.floor(entries[0]?.contentRect.width ?? 0);
    if (width <= 0) return;
    if (chart) chart.setSize({ width, height: HEIGHT });
    else chart = new uPlot(settings(width), data, plot);
  });
  observer.observe(plot);
  context.onDispose(() => {
    observer.disconnect();
    chart?.destroy();
  });
  return figure;
}
