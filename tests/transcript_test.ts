/**
 * Transcript tests of the core: each file in `tests/testdata/` is a scenario in the command
 * language of `helpers/core_cluster.ts`, with the output each command must produce written below
 * it. `UPDATE=1 deno test -A tests/transcript_test.ts` rewrites the files with what the core does
 * now; review the diff before committing it.
 */

import { CoreCluster } from "./helpers/core_cluster.ts";
import { runDataDriven } from "./helpers/datadriven.ts";

const testdata = new URL("./testdata/", import.meta.url);
const files = [...Deno.readDirSync(testdata)]
  .filter((entry) => entry.isFile && entry.name.endsWith(".txt"))
  .map((entry) => entry.name)
  .sort();

for (const name of files) {
  Deno.test(`transcript ${name}`, async () => {
    const cluster = new CoreCluster();
    await runDataDriven(new URL(name, testdata), (command) => cluster.handle(command));
  });
}
