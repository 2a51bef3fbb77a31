/**
 * Data-driven test files, as etcd's `testdata/*.txt` (cockroachdb/datadriven): each case is a
 * command line, a `----` separator and the output the command must produce, up to a blank line.
 *
 * ```
 * # A comment.
 * campaign 0
 * ----
 * [peer 0 T1 candidate] starts election
 * ```
 *
 * {@linkcode runDataDriven} runs every command in order through a handler and compares outputs.
 * With the environment variable `UPDATE=1` it rewrites the file with the outputs it got instead.
 *
 * @module
 */

import assert from "node:assert/strict";

/** One command line: the command, its positional arguments and its `key=value` arguments. */
export interface Command {
  /** The first word. */
  name: string;
  /** Words without `=`, in order (a quoted word keeps its spaces, without the quotes). */
  args: string[];
  /** `key=value` words; a bare `key` word that the handler expects as a flag is in `args`. */
  options: Map<string, string>;
  /** The line as written, and where. */
  line: string;
  lineNumber: number;
}

interface Case {
  command: Command;
  expected: string;
  /** Text before the command (comments, blank lines), kept when the file is rewritten. */
  preamble: string;
}

/** Splits a command line into words; double quotes group words. */
function words(line: string): string[] {
  const result: string[] = [];
  for (const match of line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) {
    result.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, "$1") : match[2]!);
  }
  return result;
}

function parseCommand(line: string, lineNumber: number): Command {
  const [name, ...rest] = words(line);
  const args: string[] = [];
  const options = new Map<string, string>();
  for (const word of rest) {
    const at = word.indexOf("=");
    if (at > 0 && !line.includes(`"${word}"`)) options.set(word.slice(0, at), word.slice(at + 1));
    else args.push(word);
  }
  return { name: name!, args, options, line, lineNumber };
}

function parseFile(text: string, path: string): { cases: Case[]; trailer: string } {
  const lines = text.split("\n");
  const cases: Case[] = [];
  let preamble: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.trim() === "" || line.startsWith("#")) {
      preamble.push(line);
      i++;
      continue;
    }
    const command = parseCommand(line, i + 1);
    if (lines[i + 1] !== "----") {
      throw new SyntaxError(`${path}:${i + 2}: expected "----" after the command ${line}`);
    }
    i += 2;
    const output: string[] = [];
    while (i < lines.length && lines[i] !== "") output.push(lines[i++]!);
    cases.push({ command, expected: output.join("\n"), preamble: preamble.join("\n") });
    preamble = [];
  }
  return { cases, trailer: preamble.join("\n") };
}

/**
 * Runs the commands of the file at `path` through `handle`, which returns each command's output
 * (an empty output is written as `ok`). Fails on the first output that differs, naming the line.
 * With `UPDATE=1`, rewrites the file with the outputs instead of comparing them.
 */
export async function runDataDriven(
  path: string | URL,
  handle: (command: Command) => string,
): Promise<void> {
  const text = await Deno.readTextFile(path);
  const { cases, trailer } = parseFile(text, String(path));
  const update = Deno.env.get("UPDATE") === "1";
  const rewritten: string[] = [];
  for (const { command, expected, preamble } of cases) {
    let output: string;
    try {
      output = handle(command).replace(/\n+$/, "");
    } catch (error) {
      output = `error: ${error instanceof Error ? error.message : String(error)}`;
    }
    // A blank line would end the output: keep the block in one piece.
    output = output === "" ? "ok" : output.replace(/\n\s*\n/g, "\n");
    if (update) {
      const comments = preamble.trim();
      rewritten.push(`${comments === "" ? "" : comments + "\n"}${command.line}\n----\n${output}\n`);
      continue;
    }
    assert.equal(
      output,
      expected,
      `${
        String(path)
      }:${command.lineNumber}: the output of \`${command.line}\` differs (rerun with UPDATE=1 to rewrite the file)`,
    );
  }
  if (update) {
    const body = rewritten.join("\n");
    await Deno.writeTextFile(path, body + (trailer.trim() === "" ? "" : `\n${trailer.trim()}\n`));
  }
}
