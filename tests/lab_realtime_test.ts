// The lab's 4A, 4B and 3D tests in real time, under the lab's names, on the in-memory network with
// in-memory persisters; then the lab's persistence scenarios again with every peer's state on
// disk, each restarted peer reopening its Deno.Kv database or persister directory (same tests,
// same checks). They mostly sleep, so each runs in its own child process, up to
// RAFT_TEST_CONCURRENCY at once (tests/helpers/concurrent_tests.ts), and the file takes about as
// long as its longest test. A new real-time lab suite joins the list below, to overlap with these.
import { lab3D, lab4A, lab4B, type LabTest } from "./lab/lab_tests.ts";
import { concurrentLabTests, runLabTest } from "./lab/run.ts";
import { durablePersistence } from "./helpers/durable_persistence.ts";
import { registerConcurrentTests } from "./helpers/concurrent_tests.ts";

const durableScenarios = [
  "TestPersist14B", // basic persistence
  "TestPersist24B", // more persistence
  "TestPersist34B", // leader and one follower crash
  "TestFigure84B",
  "TestReliableChurn4B",
].map((name) => {
  const test = lab4B.find((candidate) => candidate.name === name);
  if (test === undefined) throw new Error(`No lab test named ${name}`);
  return test;
});

function durable(kind: "kv" | "file", tests: LabTest[]) {
  return concurrentLabTests(tests, {
    prefix: `${kind} persister: `,
    run: (test) =>
      runLabTest(test, {
        persistence: durablePersistence(kind),
        // The prefix keeps these lines apart from the in-memory lab tests' in the stress table.
        printPrefix: `(${kind} persister) `,
      }),
  });
}

registerConcurrentTests(import.meta.url, [
  ...concurrentLabTests(lab4A),
  ...concurrentLabTests(lab4B),
  ...durable("kv", durableScenarios),
  ...durable("file", durableScenarios),
  // Last, so that `--filter 3D` starts no other test's child ahead of its turn.
  ...concurrentLabTests(lab3D),
]);
