/**
 * The few metric types a node exposes, rendered in the Prometheus text exposition format
 * (version 0.0.4): counters and gauges with labels, and a histogram.
 *
 * @module
 */

/** Label names and values of one series. */
export type Labels = Record<string, string>;

function renderLabels(labels: Labels): string {
  const pairs = Object.entries(labels);
  if (pairs.length === 0) return "";
  const escaped = pairs.map(([name, value]) =>
    `${name}="${value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')}"`
  );
  return `{${escaped.join(",")}}`;
}

function renderNumber(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** A family of counters or gauges: one name, one help text, a series per label set. */
export class SeriesFamily {
  readonly #name: string;
  readonly #help: string;
  readonly #type: "counter" | "gauge";
  readonly #series = new Map<string, { labels: Labels; value: number }>();
  readonly #byObject = new WeakMap<Labels, { labels: Labels; value: number }>();

  /** A family named `name` (Prometheus naming: counters end in `_total`). */
  constructor(name: string, type: "counter" | "gauge", help: string) {
    this.#name = name;
    this.#type = type;
    this.#help = help;
  }

  /**
   * Adds `amount` to the series of `labels`. A labels object is read once: pass the same object
   * again (unchanged) to skip looking its series up by value.
   */
  add(amount: number, labels: Labels = {}): void {
    const series = this.#get(labels);
    series.value += amount;
  }

  /** Sets the series of `labels` to `value`. */
  set(value: number, labels: Labels = {}): void {
    this.#get(labels).value = value;
  }

  #get(labels: Labels): { labels: Labels; value: number } {
    // A caller that passes the same labels object each time skips rendering its key.
    const known = this.#byObject.get(labels);
    if (known !== undefined) return known;
    const key = renderLabels(labels);
    let series = this.#series.get(key);
    if (series === undefined) {
      series = { labels, value: 0 };
      this.#series.set(key, series);
    }
    this.#byObject.set(labels, series);
    return series;
  }

  /** The family in the text format. */
  render(): string {
    const lines = [`# HELP ${this.#name} ${this.#help}`, `# TYPE ${this.#name} ${this.#type}`];
    for (const [key, { value }] of this.#series) {
      lines.push(`${this.#name}${key} ${renderNumber(value)}`);
    }
    return lines.join("\n");
  }
}

/** A histogram with fixed upper bounds. */
export class Histogram {
  readonly #name: string;
  readonly #help: string;
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  /** A histogram named `name` with the bucket upper bounds `bounds` (ascending). */
  constructor(name: string, help: string, bounds: readonly number[]) {
    this.#name = name;
    this.#help = help;
    this.#bounds = bounds;
    this.#counts = new Array(bounds.length).fill(0);
  }

  /** Records one observation. */
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.#bounds.length; i++) {
      if (value <= this.#bounds[i]!) this.#counts[i]!++;
    }
  }

  /** The histogram in the text format: cumulative buckets, `+Inf`, sum and count. */
  render(): string {
    const lines = [`# HELP ${this.#name} ${this.#help}`, `# TYPE ${this.#name} histogram`];
    this.#bounds.forEach((bound, i) => {
      lines.push(`${this.#name}_bucket{le="${renderNumber(bound)}"} ${this.#counts[i]}`);
    });
    lines.push(`${this.#name}_bucket{le="+Inf"} ${this.#count}`);
    lines.push(`${this.#name}_sum ${renderNumber(this.#sum)}`);
    lines.push(`${this.#name}_count ${this.#count}`);
    return lines.join("\n");
  }
}
