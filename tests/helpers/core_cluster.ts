/**
 * An interaction environment for transcript tests of the core: several {@linkcode RaftCore}s,
 * a queue of numbered messages between them that a test delivers, drops or reorders, disks whose
 * saves complete at once or are held, crashes and restarts, all in one virtual time. Commands:
 *
 * - `add-nodes N [pre-vote] [max-inflight=K] [max-entries=K] [max-bytes=B] [log=T,T,...] [term=T]
 *   [voters=ID,...] [learners=ID,...]`: N nodes, ids 0..N-1, each with the given log (entry terms)
 *   and term; all voters unless `voters` says which (nodes in neither list are spares, outside
 *   the cluster until a change adds them).
 * - `conf-change ID voters=ID,... [learners=ID,...]`: leader ID proposes that configuration.
 * - `config ID`: the configuration in effect on ID, and the index of its entry.
 * - `campaign ID`: ID's election timer fires (virtual time moves to its deadline).
 * - `tick ID [count=N] [stabilize]`: ID's next timer fires (heartbeat, check-quorum or election),
 *   N times, each followed by a `stabilize` if asked.
 * - `partition ID ...` / `heal`: the messages to and from these nodes are lost, until healed.
 * - `set-log ID log=T,T,... [term=T]`: ID's disk holds this log, and ID restarts from it.
 * - `advance MS`: virtual time moves on; no timer fires.
 * - `propose ID COMMAND`: ID proposes a command (a string).
 * - `deliver [#N ...] [from=ID] [to=ID]`: delivers the queued messages that match, in queue order.
 * - `drop [#N ...] [from=ID] [to=ID]`: loses them: each requester learns that no reply came.
 * - `stabilize`: delivers until the queue is empty.
 * - `compact ID INDEX [DATA]`: ID's service snapshots its state through INDEX (DATA names it).
 * - `read ID [count=N]`, `lease-read ID`: ID asks for N ReadIndex reads, or a lease read.
 * - `transfer ID TARGET`: leader ID hands its leadership over to TARGET.
 * - `hold-saves ID` / `release-saves ID`: ID's saves stay in flight until released.
 * - `crash ID` / `restart ID`: ID loses what is not on its disk, and comes back from its disk.
 * - `status ID`, `log ID` (the entries on ID's disk), `queue`.
 *
 * Each command prints what happened: the core's trace lines, saves, applies and messages.
 *
 * @module
 */

import { type CoreConfig, type Outgoing, RaftCore, type SaveMark } from "../../src/raft/core.ts";
import { decodeBase64 } from "../../src/raft/_base64.ts";
import type {
  AppendEntriesReply,
  InstallSnapshotReply,
  RequestVoteArgs,
  RequestVoteReply,
  TimeoutNowReply,
} from "../../src/raft/messages.ts";
import type { Configuration, LogEntry, PersistChange } from "../../src/raft/types.ts";
import { describeConfiguration } from "../../src/raft/membership.ts";
import { MemoryPersister } from "../../src/storage/memory_persister.ts";
import type { Command } from "./datadriven.ts";

const HEARTBEAT = 100;
const ELECTION_MIN = 300;
const ELECTION_MAX = 500;

/** A request on the wire, or the reply to one. */
type Queued =
  | { seq: number; kind: "request"; request: Outgoing; from: number }
  | {
    seq: number;
    kind: "reply";
    request: Outgoing;
    /** The peer that answers, and so sends the reply. */
    from: number;
    /** The peer that sent the request. */
    to: number;
    reply: AnyReply;
  };

interface Node {
  id: number;
  core: RaftCore;
  disk: MemoryPersister;
  /** Saves in flight while saves are held, oldest first. */
  held: { change: PersistChange; mark: SaveMark }[];
  holdSaves: boolean;
  /** Replies waiting for the saves that were in flight when the request was stepped. */
  waitingReplies: { savesBefore: number; queued: Omit<Queued, "seq"> }[];
  /** Requests waiting for the saves before them (a candidate's RequestVote). */
  waitingSends: { savesBefore: number; request: Outgoing }[];
  /** Saves asked for and saves durable, counted: replies wait for their saves. */
  savesAsked: number;
  savesDone: number;
  crashed: boolean;
}

/** The environment: nodes, the message queue, virtual time, and the output of one command. */
export class CoreCluster {
  #nodes: Node[] = [];
  #queue: Queued[] = [];
  #seq = 0;
  #now = 0;
  #out: string[] = [];
  #readIds = 0;
  /** Nodes cut off from every other: their messages, both ways, are lost. */
  readonly #cut = new Set<number>();
  #config: Omit<CoreConfig, "me" | "trace"> | null = null;

  /** Runs one transcript command and returns what it printed. */
  handle(command: Command): string {
    this.#out = [];
    const id = () => this.#node(Number(command.args[0]));
    switch (command.name) {
      case "add-nodes":
        this.#addNodes(command);
        break;
      case "campaign": {
        const node = id();
        this.#now = Math.max(this.#now, node.core.nextDeadline());
        this.#out.push(`time ${this.#now}`);
        node.core.tick(this.#now);
        break;
      }
      case "tick": {
        const node = id();
        const count = Number(command.options.get("count") ?? 1);
        for (let i = 0; i < count; i++) {
          this.#now = Math.max(this.#now, node.core.nextDeadline());
          this.#out.push(`time ${this.#now}`);
          node.core.tick(this.#now);
          this.#processAll();
          if (command.args.includes("stabilize")) this.#stabilize();
        }
        break;
      }
      case "partition":
        for (const arg of command.args) this.#cut.add(this.#node(Number(arg)).id);
        break;
      case "heal":
        this.#cut.clear();
        break;
      case "set-log": {
        const node = id();
        const terms = (command.options.get("log") ?? "").split(",").filter((term) => term !== "");
        const term = Number(command.options.get("term") ?? terms.at(-1) ?? 0);
        node.disk = new MemoryPersister({
          term,
          votedFor: null,
          snapshot: null,
          log: terms.map((entryTerm, i) => ({
            term: Number(entryTerm),
            command: `n${node.id}.${i + 1}`,
          })),
        });
        this.#restart(node);
        break;
      }
      case "advance":
        this.#now += Number(command.args[0]);
        this.#out.push(`time ${this.#now}`);
        break;
      case "propose": {
        const node = id();
        const result = node.core.propose(command.args[1]);
        this.#out.push(
          result.isLeader ? `${node.id} appends ${result.index}@${result.term}` : "not leader",
        );
        break;
      }
      case "deliver":
        this.#deliver(this.#select(command), false);
        break;
      case "drop":
        this.#deliver(this.#select(command), true);
        break;
      case "stabilize":
        this.#stabilize();
        break;
      case "compact": {
        // The service of node ID snapshots its state through INDEX (a string naming it).
        const node = id();
        const index = Number(command.args[1]);
        const data = new TextEncoder().encode(command.args[2] ?? `state through ${index}`);
        this.#out.push(node.core.compact(index, data) ? "ok" : "ignored");
        break;
      }
      case "read": {
        // ID asks for a ReadIndex read; its outcome shows in a later Ready.
        const node = id();
        const count = Number(command.options.get("count") ?? 1);
        for (let i = 0; i < count; i++) {
          const readId = ++this.#readIds;
          this.#out.push(node.core.requestRead(readId) ? `read ${readId} asked` : "not leader");
        }
        break;
      }
      case "lease-read": {
        const index = id().core.leaseRead(this.#now);
        this.#out.push(index === null ? "no lease" : `lease holds: read index ${index}`);
        break;
      }
      case "conf-change": {
        const list = (name: string) =>
          (command.options.get(name) ?? "").split(",").filter((id) => id !== "").map((id) => ({
            id: Number(id),
            address: "",
          }));
        const result = id().core.proposeConfiguration(
          { voters: list("voters"), learners: list("learners") },
          this.#now,
        );
        this.#out.push(
          result.ok
            ? `${command.args[0]} appends ${result.index}@${result.term}`
            : `refused (${result.reason}): ${result.message}`,
        );
        break;
      }
      case "config": {
        const core = id().core;
        this.#out.push(
          `${command.args[0]}: ${
            describeConfiguration(core.configuration)
          } (entry ${core.configurationIndex}, commit ${core.commitIndex})`,
        );
        break;
      }
      case "transfer": {
        const refusal = id().core.transferLeadership(Number(command.args[1]), this.#now);
        this.#out.push(refusal ?? "handing over");
        break;
      }
      case "hold-saves":
        id().holdSaves = true;
        break;
      case "release-saves": {
        const node = id();
        node.holdSaves = false;
        while (node.held.length > 0) this.#completeSave(node, node.held.shift()!, true);
        break;
      }
      case "crash":
        this.#crash(id());
        break;
      case "restart":
        this.#restart(id());
        break;
      case "status":
        this.#status(id());
        break;
      case "log":
        this.#printLog(id());
        break;
      case "queue":
        for (const queued of this.#queue) this.#out.push(this.#describe(queued));
        break;
      default:
        throw new Error(`unknown command ${command.name}`);
    }
    this.#processAll();
    return this.#out.join("\n");
  }

  #stabilize(): void {
    for (let round = 0; this.#queue.length > 0; round++) {
      if (round === 100) throw new Error("no quiet after 100 rounds");
      this.#deliver([...this.#queue], false);
    }
  }

  #node(id: number): Node {
    const node = this.#nodes[id];
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  #addNodes(command: Command): void {
    const count = Number(command.args[0]);
    const option = (name: string, fallback: number) =>
      command.options.has(name) ? Number(command.options.get(name)) : fallback;
    this.#config = {
      heartbeatIntervalMs: HEARTBEAT,
      commitNotifyDelayMs: 10,
      electionTimeoutMinMs: ELECTION_MIN,
      electionTimeoutMaxMs: ELECTION_MAX,
      maxEntriesPerAppend: option("max-entries", 64),
      maxAppendBytes: option("max-bytes", 64 * 1024),
      maxInflightAppends: option("max-inflight", 4),
      random: () => 0,
      preVote: command.args.includes("pre-vote"),
      peerCount: count,
    };
    if (command.options.has("voters")) {
      const list = (name: string) =>
        (command.options.get(name) ?? "").split(",").filter((id) => id !== "").map((id) => ({
          id: Number(id),
          address: "",
        }));
      this.#config.configuration = { voters: list("voters"), learners: list("learners") };
    }
    const terms = (command.options.get("log") ?? "").split(",").filter((term) => term !== "");
    const log: LogEntry[] = terms.map((term, i) => ({ term: Number(term), command: `e${i + 1}` }));
    const term = option("term", Number(terms.at(-1) ?? 0));
    for (let i = 0; i < count; i++) {
      const disk = new MemoryPersister({
        term,
        votedFor: null,
        snapshot: null,
        log: structuredClone(log),
      });
      this.#nodes.push({
        id: i,
        core: null as unknown as RaftCore,
        disk,
        held: [],
        holdSaves: false,
        waitingReplies: [],
        waitingSends: [],
        savesAsked: 0,
        savesDone: 0,
        crashed: false,
      });
      this.#restart(this.#nodes[i]!, false);
    }
    this.#out.push(`${count} nodes, term ${term}, log ${terms.length === 0 ? "empty" : terms}`);
  }

  #restart(node: Node, announce = true): void {
    const state = node.disk.state();
    node.core = new RaftCore(
      {
        ...this.#config!,
        me: node.id,
        trace: (line) => this.#out.push(line),
      },
      state,
      this.#now,
    );
    node.crashed = false;
    node.held = [];
    node.waitingReplies = [];
    node.waitingSends = [];
    node.savesAsked = node.savesDone = 0;
    if (announce) {
      const snapshot = state.snapshot === null
        ? ""
        : `, snapshot through ${state.snapshot.index}@${state.snapshot.term}`;
      this.#out.push(
        `${node.id} restarts: term ${state.term}, vote ${
          state.votedFor ?? "none"
        }${snapshot}, log ${state.log.map((entry) => entry.term).join(",") || "empty"}`,
      );
    }
  }

  #crash(node: Node): void {
    node.crashed = true;
    this.#out.push(`${node.id} crashes; ${node.held.length} saves in flight are lost`);
    node.held = [];
  }

  /** Takes every live node's Ready until none has anything left. */
  #processAll(): void {
    for (let round = 0; round < 10; round++) {
      let busy = false;
      for (const node of this.#nodes) {
        if (!node.crashed && this.#process(node)) busy = true;
      }
      if (!busy) return;
    }
  }

  /** Carries out one Ready of `node`; true if it held anything. */
  #process(node: Node): boolean {
    const ready = node.core.takeReady(this.#now);
    for (const request of ready.send) this.#enqueue({ kind: "request", request, from: node.id });
    for (const request of ready.sendAfterSave) {
      node.waitingSends.push({ savesBefore: node.savesAsked + 1, request });
    }
    for (const { id, index } of ready.reads) {
      this.#out.push(
        index === null ? `${node.id} read ${id} failed` : `${node.id} read ${id} at index ${index}`,
      );
    }
    for (const msg of ready.apply) {
      this.#out.push(
        msg.snapshotValid
          ? `${node.id} applies the snapshot through ${msg.snapshotIndex}@${msg.snapshotTerm}: ${
            new TextDecoder().decode(msg.snapshot!)
          }`
          : `${node.id} applies ${msg.commandIndex}@${msg.commandTerm}:${
            describeCommand(msg.command)
          }`,
      );
    }
    if (ready.save !== null && ready.saveMark !== null) {
      node.savesAsked++;
      this.#out.push(`${node.id} saves ${describeChange(ready.save)}`);
      const save = { change: ready.save, mark: ready.saveMark };
      if (node.holdSaves) node.held.push(save);
      else this.#completeSave(node, save);
    } else {
      this.#releaseWaiting(node);
    }
    return ready.save !== null || ready.send.length > 0 || ready.apply.length > 0 ||
      ready.sendAfterSave.length > 0 || ready.reads.length > 0;
  }

  #completeSave(
    node: Node,
    save: { change: PersistChange; mark: SaveMark },
    announce = false,
  ): void {
    node.disk.save(save.change);
    node.savesDone++;
    if (announce) this.#out.push(`${node.id} save durable: ${describeChange(save.change)}`);
    node.core.onSaved(save.mark, this.#now);
    this.#releaseWaiting(node);
  }

  #releaseWaiting(node: Node): void {
    node.waitingSends = node.waitingSends.filter(({ savesBefore, request }) => {
      if (savesBefore > node.savesDone) return true;
      this.#enqueue({ kind: "request", request, from: node.id });
      return false;
    });
    node.waitingReplies = node.waitingReplies.filter(({ savesBefore, queued }) => {
      if (savesBefore > node.savesDone) return true;
      this.#enqueue(queued);
      return false;
    });
  }

  #enqueue(queued: Omit<Queued, "seq">): void {
    const entry = { ...queued, seq: ++this.#seq } as Queued;
    this.#queue.push(entry);
    this.#out.push(this.#describe(entry));
  }

  #select(command: Command): Queued[] {
    const seqs = command.args.filter((arg) => arg.startsWith("#")).map((arg) =>
      Number(arg.slice(1))
    );
    const from = command.options.get("from");
    const to = command.options.get("to");
    return this.#queue.filter((queued) =>
      (seqs.length === 0 || seqs.includes(queued.seq)) &&
      (from === undefined || queued.from === Number(from)) &&
      (to === undefined || receiverOf(queued) === Number(to))
    ).sort((a, b) => seqs.length === 0 ? a.seq - b.seq : seqs.indexOf(a.seq) - seqs.indexOf(b.seq));
  }

  /** Delivers (or drops) `messages`, in order: each delivery's consequences print below it. */
  #deliver(messages: Queued[], drop: boolean): void {
    for (const queued of messages) {
      const at = this.#queue.indexOf(queued);
      if (at < 0) continue;
      this.#queue.splice(at, 1);
      const requester = this.#nodes[queued.kind === "request" ? queued.from : queued.to]!;
      const receiver = this.#nodes[receiverOf(queued)]!;
      const lost = drop || receiver.crashed || this.#cut.has(receiver.id) ||
        this.#cut.has(requester.id);
      this.#out.push(`${lost ? "drop" : "deliver"} #${queued.seq}`);
      if (queued.kind === "request" && !lost) {
        this.#answer(receiver, queued.request, queued.from);
      } else if (!requester.crashed) {
        // A lost request or reply: the requester's transport says no reply came.
        const reply = lost ? null : (queued as Extract<Queued, { kind: "reply" }>).reply;
        const { request } = queued;
        const from = request.to;
        stepReply(requester.core, request, from, reply, this.#now);
      }
      this.#processAll();
    }
  }

  /** `node` steps a request from `from`; its reply leaves once its saves so far are durable. */
  #answer(node: Node, request: Outgoing, from: number): void {
    const reply = stepRequest(node.core, request, this.#now);
    this.#process(node);
    const queued = { kind: "reply" as const, request, from: node.id, to: from, reply };
    if (node.savesDone >= node.savesAsked) this.#enqueue(queued);
    else {
      node.waitingReplies.push({ savesBefore: node.savesAsked, queued });
      this.#out.push(`${node.id} holds its reply to ${from} until its save is durable`);
    }
  }

  #status(node: Node): void {
    const core = node.core;
    this.#out.push(
      `${node.id}: term ${core.currentTerm} ${core.role}, leader ${
        core.leaderId ?? "none"
      }, commit ${core.commitIndex}, last ${core.lastIndex}${node.crashed ? " (crashed)" : ""}`,
    );
    if (core.role !== "leader") return;
    for (const other of this.#nodes) {
      const progress = core.progress(other.id);
      if (progress === undefined) continue;
      this.#out.push(
        `  ${other.id}: ${progress.state} match ${progress.matchIndex} next ${progress.nextIndex} in flight ${progress.inflights.count}${
          progress.probeSent ? " (probe sent)" : ""
        }`,
      );
    }
  }

  #printLog(node: Node): void {
    const { log, snapshot } = node.disk.state();
    const first = (snapshot?.index ?? 0) + 1;
    const prefix = snapshot === null ? "" : `snapshot through ${snapshot.index}@${snapshot.term}, `;
    const entries = log.map((entry, i) =>
      `${first + i}@${entry.term}:${describeCommand(entry.command)}`
    );
    this.#out.push(
      `${node.id}: ${prefix}${entries.length === 0 ? "no entries" : entries.join(" ")}`,
    );
  }

  #describe(queued: Queued): string {
    const { request } = queued;
    if (queued.kind === "request") {
      return `#${queued.seq} ${queued.from}->${request.to} ${describeRequest(request)}`;
    }
    return `#${queued.seq} ${queued.from}->${queued.to} ${describeReply(request, queued.reply)}`;
  }
}

type AnyReply = RequestVoteReply | AppendEntriesReply | InstallSnapshotReply | TimeoutNowReply;

/** Steps `request` on the core that receives it; returns its reply. */
function stepRequest(core: RaftCore, request: Outgoing, now: number): AnyReply {
  switch (request.method) {
    case "RequestVote":
      return core.step({ type: "RequestVote", args: request.args }, now);
    case "AppendEntries":
      return core.step({ type: "AppendEntries", args: request.args }, now);
    case "InstallSnapshot":
      return core.step({
        type: "InstallSnapshot",
        args: request.args,
        data: decodeBase64(request.args.data)!,
      }, now);
    case "TimeoutNow":
      return core.step({ type: "TimeoutNow", args: request.args }, now);
  }
}

/** Steps the reply to `request` (null: lost) on the core that sent it to `from`. */
function stepReply(
  core: RaftCore,
  request: Outgoing,
  from: number,
  reply: AnyReply | null,
  now: number,
): void {
  switch (request.method) {
    case "RequestVote":
      core.step({
        type: "RequestVoteReply",
        from,
        args: request.args,
        reply: reply as RequestVoteReply | null,
      }, now);
      break;
    case "AppendEntries":
      core.step({
        type: "AppendEntriesReply",
        from,
        args: request.args,
        reply: reply as AppendEntriesReply | null,
      }, now);
      break;
    case "InstallSnapshot":
      core.step({
        type: "InstallSnapshotReply",
        from,
        args: request.args,
        reply: reply as InstallSnapshotReply | null,
      }, now);
      break;
    case "TimeoutNow":
      core.step({
        type: "TimeoutNowReply",
        from,
        args: request.args,
        reply: reply as TimeoutNowReply | null,
      }, now);
      break;
  }
}

/** A command as transcripts show it: a configuration as `conf(voters 0,1 learners 2)`. */
function describeCommand(command: unknown): string {
  if (typeof command === "object" && command !== null && "voters" in command) {
    return `conf(${describeConfiguration(command as Configuration)})`;
  }
  return String(command);
}

function receiverOf(queued: Queued): number {
  return queued.kind === "request" ? queued.request.to : queued.to;
}

function describeEntries(first: number, entries: LogEntry[]): string {
  return entries.map((entry, i) => `${first + i}@${entry.term}:${describeCommand(entry.command)}`)
    .join(" ");
}

function describeChange(change: PersistChange): string {
  const log = change.log === undefined
    ? ""
    : change.log.entries.length === 0
    ? ` log from ${change.log.from}: none`
    : ` log from ${change.log.from}: ${describeEntries(change.log.from, change.log.entries)}`;
  const snapshot = change.snapshot === undefined
    ? ""
    : ` snapshot through ${change.snapshot.index}@${change.snapshot.term}`;
  return `term ${change.term} vote ${change.votedFor ?? "none"}${snapshot}${log}`;
}

function describeRequest(request: Outgoing): string {
  if (request.method === "TimeoutNow") return `TimeoutNow term ${request.args.term}`;
  if (request.method === "InstallSnapshot") {
    const args = request.args;
    const bytes = decodeBase64(args.data)!.length;
    return `InstallSnapshot term ${args.term} through ${args.lastIncludedIndex}@${args.lastIncludedTerm} offset ${args.offset} bytes ${bytes}${
      args.done ? " done" : ""
    }`;
  }
  if (request.method === "RequestVote") {
    const args: RequestVoteArgs = request.args;
    return `${
      args.preVote === true ? "PreVote" : "RequestVote"
    } term ${args.term} last ${args.lastLogIndex}@${args.lastLogTerm}${
      args.transfer === true ? " (transfer)" : ""
    }`;
  }
  const args = request.args;
  const entries = args.entries.length === 0
    ? ""
    : ` entries ${describeEntries(args.prevLogIndex + 1, args.entries)}`;
  return `AppendEntries term ${args.term} prev ${args.prevLogIndex}@${args.prevLogTerm} commit ${args.leaderCommit}${entries}`;
}

function describeReply(request: Outgoing, reply: AnyReply): string {
  if (request.method === "TimeoutNow") return `TimeoutNow reply term ${reply.term}`;
  if (request.method === "InstallSnapshot") {
    const snapshot = reply as InstallSnapshotReply;
    return `InstallSnapshot reply term ${snapshot.term} holds ${snapshot.offset}${
      snapshot.installed ? " installed" : ""
    }`;
  }
  if (request.method === "RequestVote") {
    const vote = reply as RequestVoteReply;
    const kind = request.args.preVote === true ? "PreVote" : "RequestVote";
    return `${kind} reply term ${vote.term} ${vote.voteGranted ? "granted" : "refused"}`;
  }
  const append = reply as AppendEntriesReply;
  return append.success
    ? `AppendEntries reply term ${append.term} ok`
    : `AppendEntries reply term ${append.term} rejected (hint ${append.conflictIndex}@${append.conflictTerm})`;
}
