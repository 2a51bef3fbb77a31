/**
 * The check that a command or result survives JSON unchanged: commands travel as JSON, and a
 * value JSON would change (a `Date` comes back a string, `undefined` disappears) must be refused
 * where it enters, not discovered when it is applied.
 *
 * @module
 */

/** How deep a command may nest: far more than any real command, far less than the stack. */
export const MAX_JSON_DEPTH = 64;

/**
 * Throws a `TypeError` naming the first part of `value` that JSON would not carry unchanged:
 * anything but `null`, booleans, strings, finite numbers other than -0, arrays without holes and
 * plain objects with string keys; or a value nested deeper than {@linkcode MAX_JSON_DEPTH}.
 */
export function checkJsonData(value: unknown, what = "Command"): void {
  const problem = findProblem(value, what.toLowerCase(), 0, new Set());
  if (problem !== null) throw new TypeError(`${what} must be JSON data: ${problem}`);
}

function findProblem(
  value: unknown,
  path: string,
  depth: number,
  seen: Set<object>,
): string | null {
  switch (typeof value) {
    case "string":
    case "boolean":
      return null;
    case "number":
      if (!Number.isFinite(value)) return `${path} is ${value}, which JSON turns into null`;
      if (Object.is(value, -0)) return `${path} is -0, which JSON turns into 0`;
      return null;
    case "undefined":
      return `${path} is undefined, which JSON leaves out`;
    case "bigint":
      return `${path} is a bigint (${value}n), which JSON cannot carry`;
    case "function":
    case "symbol":
      return `${path} is a ${typeof value}, which JSON leaves out`;
  }
  if (value === null) return null;
  if (depth >= MAX_JSON_DEPTH) return `${path} is nested more than ${MAX_JSON_DEPTH} levels deep`;
  const object = value as object;
  if (seen.has(object)) return `${path} refers back to itself`;
  seen.add(object);
  try {
    if (Array.isArray(object)) {
      for (let i = 0; i < object.length; i++) {
        if (!(i in object)) return `${path}[${i}] is a hole, which JSON turns into null`;
        const problem = findProblem(object[i], `${path}[${i}]`, depth + 1, seen);
        if (problem !== null) return problem;
      }
      return null;
    }
    const prototype = Object.getPrototypeOf(object);
    if (prototype !== Object.prototype && prototype !== null) {
      const kind = prototype?.constructor?.name ?? "object";
      return `${path} is a ${kind}, which JSON turns into ${
        typeof (object as { toJSON?: unknown }).toJSON === "function"
          ? "something else"
          : "a plain object"
      }`;
    }
    if (Object.getOwnPropertySymbols(object).length > 0) {
      return `${path} has symbol keys, which JSON leaves out`;
    }
    if ("toJSON" in object) return `${path} has a toJSON method, which JSON calls`;
    for (const key of Object.keys(object)) {
      const problem = findProblem(
        (object as Record<string, unknown>)[key],
        `${path}.${key}`,
        depth + 1,
        seen,
      );
      if (problem !== null) return problem;
    }
    return null;
  } finally {
    seen.delete(object);
  }
}
