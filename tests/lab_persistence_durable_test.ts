// The lab's persistence scenarios again, with every peer's state on disk: each restarted peer
// reopens its Deno.Kv database or persister directory. Same tests, same checks as lab_4b_test.ts.
import { lab4B } from "./lab/lab_tests.ts";
import { runLabTest } from "./lab/run.ts";
import { durablePersistence } from "./helpers/durable_persistence.ts";
import { sanitized } from "./helpers/sanitized.ts";

const scenarios = [
  "TestPersist14B", // basic persistence
  "TestPersist24B", // more persistence
  "TestPersist34B", // leader and one follower crash
  "TestFigure84B",
  "TestReliableChurn4B",
];

for (const kind of ["kv", "file"] as const) {
  for (const name of scenarios) {
    const test = lab4B.find((candidate) => candidate.name === name);
    if (test === undefined) throw new Error(`No lab test named ${name}`);
    Deno.test(
      `${kind} persister: ${name}`,
      sanitized,
      // The prefix keeps these lines apart from the in-memory lab tests' in the stress table.
      () =>
        runLabTest(test, {
          persistence: durablePersistence(kind),
          printPrefix: `(${kind} persister) `,
        }),
    );
  }
}
