// The lab's part 4B tests (log replication and persistence), in real time.
import { lab4B } from "./lab/lab_tests.ts";
import { registerLabTests } from "./lab/run.ts";

registerLabTests(lab4B);
