// The live view of a local denoraft cluster: one server-sent event stream from the launcher
// (`/api/events`) feeds the peers' cards, the leader line and the timeline; the controls POST to
// the launcher with its token. Plain JavaScript, so the browser runs this file as it is served.

const TOKEN_KEY = "denoraft-launcher-token";
const MAX_TIMELINE = 200;

const ROLE = {
  leader: ["★", "Leader"],
  candidate: ["◆", "Candidate"],
  precandidate: ["◇", "Pre-candidate"],
  follower: ["○", "Follower"],
};
const KIND = {
  action: ["▶", "Action"],
  election: ["⚑", "Election"],
  leader: ["★", "Leader"],
  peer: ["●", "Peer"],
  fatal: ["✕", "Fatal"],
  note: ["✎", "Note"],
};

const token = takeToken();
const cards = new Map();
const $ = (id) => document.getElementById(id);

/** The launcher's token: from the address's fragment (then hidden from it), or this tab's store. */
function takeToken() {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) {
    sessionStorage.setItem(TOKEN_KEY, fromFragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function text(element, value) {
  const string = String(value);
  if (element.textContent !== string) element.textContent = string;
}

function rate(value) {
  return value === undefined ? "0" : value.toFixed(1);
}

/** Two significant digits: 0.042 ms, 2.1 ms, 50 ms, 1.2 s. */
function milliseconds(ms) {
  if (ms >= 1000) return `${(ms / 1000).toPrecision(2)} s`;
  return `${Number(ms.toPrecision(2))} ms`;
}

function seconds(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** The card of peer `id`, made from the template the first time. */
function card(id) {
  let entry = cards.get(id);
  if (entry !== undefined) return entry;
  const root = $("peer-template").content.firstElementChild.cloneNode(true);
  root.id = `peer-${id}`;
  root.dataset.peer = String(id);
  root.setAttribute("aria-labelledby", `peer-${id}-name`);
  const name = root.querySelector(".peer-name");
  name.id = `peer-${id}-name`;
  name.textContent = `Peer ${id}`;
  root.querySelector(".actions").setAttribute("aria-label", `Peer ${id} controls`);
  const field = (key) => root.querySelector(`[data-field="${key}"]`);
  const slots = {};
  for (const button of root.querySelectorAll("[data-slot]")) {
    button.dataset.peer = String(id);
    slots[button.dataset.slot] = button;
  }
  entry = { root, field, slots, logKey: "" };
  cards.set(id, entry);
  const container = $("peers");
  const after = [...container.children].find((other) => Number(other.dataset.peer) > id);
  container.insertBefore(root, after ?? null);
  return entry;
}

function renderPeer(view) {
  const { root, field, slots } = card(view.id);
  const snapshot = view.snapshot;
  const status = snapshot?.status;
  const live = view.process === "running" && view.reachability === "up";
  root.classList.toggle("stale", !live);
  root.classList.toggle("is-leader", live && status?.role === "leader");
  root.dataset.role = status?.role ?? "";
  root.dataset.process = view.process;
  root.dataset.reachability = view.reachability;

  const badges = [];
  if (view.process === "stopped") badges.push(["down", "✕", "Down"]);
  else if (view.process === "starting") badges.push(["down", "…", "Starting"]);
  else if (view.process === "paused") badges.push(["paused", "‖", "Paused"]);
  else if (view.reachability !== "up") badges.push(["unheard", "?", "Not heard"]);
  else if (status !== undefined) badges.push([status.role, ...ROLE[status.role]]);
  if (view.cutOff) badges.push(["cut", "✂", "Cut off"]);
  const badgeKey = JSON.stringify(badges);
  if (field("badges").dataset.key !== badgeKey) {
    field("badges").dataset.key = badgeKey;
    field("badges").replaceChildren(...badges.map(([kind, icon, label]) => {
      const badge = document.createElement("span");
      badge.className = `badge badge-${kind}`;
      badge.textContent = `${icon} ${label}`;
      return badge;
    }));
  }

  const heard = live
    ? "live"
    : view.reachability === "connecting"
    ? "not heard yet"
    : "last figures heard";
  text(field("sub"), snapshot ? `pid ${snapshot.pid} · ${heard}` : heard);
  text(field("term"), status?.term ?? "–");
  text(field("leader"), status?.leaderId ?? "none");
  text(field("last"), status?.lastLogIndex ?? "–");
  text(field("commit"), status?.commitIndex ?? "–");
  text(field("applied"), status?.lastApplied ?? "–");
  const saves = snapshot?.saves;
  text(
    field("saves"),
    saves === undefined || saves.perSecond === 0
      ? "no saves in the last second"
      : `${rate(saves.perSecond)} saves/s, mean ${milliseconds(saves.meanMs)}` +
        (saves.p99Ms === null ? "" : `, 99% within ${milliseconds(saves.p99Ms)}`),
  );
  renderLog(view.id, snapshot);

  const followers = status?.followers ?? [];
  field("followers-block").hidden = followers.length === 0;
  const rows = followers.map((
    f,
  ) => [`peer ${f.id}`, f.matchIndex, f.nextIndex, f.state, f.inflight]);
  const rowsKey = JSON.stringify(rows);
  if (field("followers").dataset.key !== rowsKey) {
    field("followers").dataset.key = rowsKey;
    field("followers").replaceChildren(...rows.map((cells) => {
      const row = document.createElement("tr");
      cells.forEach((cell, i) => {
        const element = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) element.scope = "row";
        element.textContent = String(cell);
        row.append(element);
      });
      return row;
    }));
  }
  for (const kind of ["AppendEntries", "RequestVote"]) {
    for (const verb of ["sent", "answered"]) {
      text(field(`${kind} ${verb}`), rate(snapshot?.messagesPerSecond[`${kind} ${verb}`]));
    }
  }

  const life = view.process === "stopped"
    ? ["restart", "Restart"]
    : view.process === "starting"
    ? [null, "Starting…"]
    : ["kill", "Kill (SIGKILL)"];
  const pause = view.process === "paused" ? ["resume", "Resume (SIGCONT)"] : [
    view.process === "running" ? "pause" : null,
    "Pause (SIGSTOP)",
  ];
  const link = view.cutOff
    ? [view.process === "running" ? "heal" : null, "Heal links"]
    : [view.process === "running" ? "cut-off" : null, "Cut off"];
  setButton(slots.life, view.id, ...life);
  setButton(slots.pause, view.id, ...pause);
  setButton(slots.link, view.id, ...link);
}

/** A control button: `action` null makes it unavailable, yet focusable, so focus never jumps. */
function setButton(button, peer, action, label) {
  text(button, label);
  button.dataset.action = action ?? "";
  const unavailable = action === null || token === null ||
    button.getAttribute("aria-busy") === "true";
  button.setAttribute("aria-disabled", String(unavailable));
  button.setAttribute("aria-label", `${label.replace(/ \(.*\)$/, "")} peer ${peer}`);
}

function renderLog(id, snapshot) {
  const { field } = card(id);
  const log = snapshot?.log ?? [];
  const commit = snapshot?.status.commitIndex ?? 0;
  const key = JSON.stringify([log, commit]);
  if (cards.get(id).logKey === key) return;
  cards.get(id).logKey = key;
  const list = field("log");
  list.replaceChildren(...log.map((entry) => {
    const item = document.createElement("li");
    const committed = entry.index <= commit;
    item.className = `entry term-${entry.term % 8}${committed ? "" : " uncommitted"}${
      entry.noop ? " noop" : ""
    }`;
    item.textContent = String(entry.term);
    item.title = `index ${entry.index}, term ${entry.term}${committed ? ", committed" : ""}${
      entry.noop ? ", no-op" : ""
    }`;
    return item;
  }));
  if (log.length === 0) {
    list.removeAttribute("aria-label");
    text(field("log-range"), "No entries yet.");
    return;
  }
  const first = log[0];
  const last = log[log.length - 1];
  const terms = [...new Set(log.map((entry) => entry.term))].join(", ");
  const uncommitted = log.filter((entry) => entry.index > commit).length;
  const summary = `Entries ${first.index} to ${last.index}, terms ${terms}; ${
    uncommitted === 0 ? "all committed" : `${uncommitted} not committed`
  }`;
  list.setAttribute("aria-label", summary);
  text(field("log-range"), summary);
}

function renderLeader(leader) {
  const element = $("leader");
  element.dataset.leader = leader === null ? "" : String(leader.id);
  element.dataset.term = leader === null ? "" : String(leader.term);
  text(
    element,
    leader === null ? "Leader: none" : `Leader: ★ peer ${leader.id}, term ${leader.term}`,
  );
}

function renderHeard() {
  const views = [...cards.values()].map(({ root }) => root.dataset);
  const heard = views.filter((d) => d.process === "running" && d.reachability === "up").length;
  text($("heard"), `${heard} of ${views.length} peers heard`);
}

function addEntry(entry) {
  const list = $("timeline");
  if (list.querySelector(`[data-seq="${entry.seq}"]`)) return;
  const item = document.createElement("li");
  item.className = `entry kind-${entry.kind}`;
  item.dataset.seq = String(entry.seq);
  item.dataset.kind = entry.kind;
  if (entry.peer !== null) item.dataset.peer = String(entry.peer);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${(entry.at / 1000).toFixed(1)} s`;
  const kind = document.createElement("span");
  kind.className = "kind";
  kind.textContent = `${KIND[entry.kind][0]} ${KIND[entry.kind][1]}`;
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = entry.text;
  item.append(time, " ", kind, " ", what);
  if (entry.after !== null) {
    const after = document.createElement("span");
    after.className = "after";
    after.textContent = `${seconds(entry.after.ms)} after “${entry.after.action}”`;
    item.append(" ", after);
  }
  list.prepend(item);
  while (list.children.length > MAX_TIMELINE) list.lastElementChild.remove();
}

function renderWrites(stats) {
  if (stats === null) return;
  const line = stats.rate === 0 && stats.inFlight === 0
    ? "No writes."
    : `Asked ${stats.rate}/s: ${stats.acknowledgedPerSecond}/s acknowledged, ` +
      `${stats.failedPerSecond}/s failed` +
      (stats.p50Ms === null ? "" : `, median ${stats.p50Ms} ms`) +
      (stats.failedPerSecond > 0 && stats.lastError ? ` (last: ${stats.lastError})` : "");
  text($("write-stats"), line);
}

function say(message) {
  text($("alert"), message);
}

async function control(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: {
      "x-launcher-token": token,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const reply = await response.json().catch(() => ({}));
    throw new Error(reply.error ?? `HTTP ${response.status}`);
  }
}

$("peers").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-slot]");
  if (button === null || button.getAttribute("aria-disabled") === "true") return;
  const { peer, action } = button.dataset;
  button.setAttribute("aria-busy", "true");
  button.setAttribute("aria-disabled", "true");
  say("");
  try {
    await control(`/api/peers/${peer}/${action}`);
  } catch (error) {
    say(`Could not ${action} peer ${peer}: ${error.message}`);
  } finally {
    button.removeAttribute("aria-busy");
    const view = latest.get(Number(peer));
    if (view !== undefined) renderPeer(view);
  }
});

$("writes-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (token === null) return;
  say("");
  try {
    await control("/api/writes", { rate: Number($("rate").value) });
  } catch (error) {
    say(`Could not set the write rate: ${error.message}`);
  }
});

const latest = new Map();

function connect() {
  const source = new EventSource("/api/events");
  const connection = $("connection");
  source.addEventListener("open", () => {
    connection.dataset.state = "open";
    text(connection, "Live");
  });
  source.addEventListener("error", () => {
    connection.dataset.state = "lost";
    text(connection, "Launcher not reachable; retrying…");
  });
  source.addEventListener("init", (event) => {
    const state = JSON.parse(event.data);
    $("timeline").replaceChildren();
    $("rate").max = String(state.maxWriteRate);
    for (const view of state.peers) {
      latest.set(view.id, view);
      renderPeer(view);
    }
    renderLeader(state.leader);
    for (const entry of state.timeline) addEntry(entry);
    renderWrites(state.writes);
    renderHeard();
  });
  source.addEventListener("peer", (event) => {
    const view = JSON.parse(event.data);
    latest.set(view.id, view);
    renderPeer(view);
    renderHeard();
  });
  source.addEventListener("leader", (event) => renderLeader(JSON.parse(event.data)));
  source.addEventListener("entry", (event) => addEntry(JSON.parse(event.data)));
  source.addEventListener("writes", (event) => renderWrites(JSON.parse(event.data)));
}

if (token === null) {
  $("controls-off").hidden = false;
  for (const element of document.querySelectorAll("#writes-form [data-control], #rate")) {
    element.disabled = true;
  }
}
connect();
