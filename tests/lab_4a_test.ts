// The lab's part 4A tests (leader election), in real time.
import { lab4A } from "./lab/lab_tests.ts";
import { registerLabTests } from "./lab/run.ts";

registerLabTests(lab4A);
