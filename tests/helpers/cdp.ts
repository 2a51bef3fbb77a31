/**
 * A small client of the Chrome DevTools Protocol, spoken directly over Deno's WebSocket, to drive
 * a headless Chromium from a test: open a page, evaluate in it, wait for a condition (on DOM
 * changes, never by polling), click like a mouse, press keys, take screenshots.
 *
 * @module
 */

/** Where a Chromium or Chrome binary is: `$CHROME_PATH`, or the first known name on `$PATH`. */
export function findChromium(): string | null {
  const given = Deno.env.get("CHROME_PATH");
  if (given !== undefined && given !== "") return given;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    for (const name of ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]) {
      try {
        if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
      } catch {
        // Not there.
      }
    }
  }
  return null;
}

/** An error the protocol or the page reported, with the method that caused it. */
export class CdpError extends Error {
  override name = "CdpError";
}

interface Pending {
  method: string;
  resolve(result: Record<string, unknown>): void;
  reject(error: Error): void;
}

type EventListener = (params: Record<string, unknown>, sessionId: string | undefined) => void;

/** A headless browser started for a test; {@linkcode Browser.close} ends it and its profile. */
export class Browser {
  readonly #process: Deno.ChildProcess;
  readonly #socket: WebSocket;
  readonly #profile: string;
  readonly #stderr: Promise<string>;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<EventListener & { method: string }>();
  readonly #closed: Promise<void>;
  #nextId = 1;

  private constructor(
    process: Deno.ChildProcess,
    socket: WebSocket,
    profile: string,
    stderr: Promise<string>,
  ) {
    this.#process = process;
    this.#socket = socket;
    this.#profile = profile;
    this.#stderr = stderr;
    this.#closed = new Promise((resolve) => socket.addEventListener("close", () => resolve()));
    socket.addEventListener("message", (event) => this.#receive(String(event.data)));
    socket.addEventListener("close", () => {
      for (const pending of this.#pending.values()) {
        pending.reject(new CdpError(`The browser closed before answering ${pending.method}`));
      }
      this.#pending.clear();
    });
  }

  /**
   * Starts `executable` headless with a fresh profile and connects to it; resolves once the
   * protocol answers. Throws if it does not within 20 s, with the browser's last words.
   */
  static async launch(executable: string): Promise<Browser> {
    const profile = await Deno.makeTempDir({ prefix: "denoraft-chromium-" });
    const args = [
      "--headless=new",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-gpu",
      "--disable-extensions",
      "--disable-background-networking",
      "--disable-sync",
      "--disable-component-update",
      "--disable-breakpad", // no crash reporter writing outside the profile
      "--disable-crash-reporter",
      "--hide-scrollbars",
      "--mute-audio",
      "--force-color-profile=srgb",
      // Chromium refuses to run as root with its sandbox on; tests in containers run as root.
      ...(Deno.uid() === 0 ? ["--no-sandbox"] : []),
      "about:blank",
    ];
    const process = new Deno.Command(executable, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Read stderr until the DevTools address shows, then keep draining it (the last lines are
    // kept for error messages) so the browser never blocks on a full pipe.
    let lines = "";
    let found: (url: string) => void = () => {};
    const address = new Promise<string>((resolve) => (found = resolve));
    const stderr = (async () => {
      for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) {
        lines = (lines + chunk).slice(-4000);
        const match = lines.match(/DevTools listening on (ws:\/\/\S+)/);
        if (match !== null) found(match[1]!);
      }
      return lines;
    })();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const url = await Promise.race([
      address,
      process.status.then(() => null),
      new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 20000))),
    ]);
    clearTimeout(timer);
    if (url === null) {
      try {
        process.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await process.status;
      const words = await stderr;
      await Deno.remove(profile, { recursive: true });
      throw new CdpError(
        `Chromium (${executable}) did not offer a DevTools address within 20 s; it said: ${
          words.slice(-1000)
        }`,
      );
    }
    const socket = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener(
        "error",
        () => reject(new CdpError(`Could not connect to DevTools at ${url}`)),
        { once: true },
      );
    });
    return new Browser(process, socket, profile, stderr);
  }

  /** The browser's process id (its renderers and helpers are its descendants). */
  get pid(): number {
    return this.#process.pid;
  }

  /** Opens a new tab and attaches to it. */
  async newPage(): Promise<Page> {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, String(sessionId));
    await page.send("Page.enable");
    await page.send("Runtime.enable");
    return page;
  }

  /** Sends a command to the browser, or to a page's session; resolves to its result. */
  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    if (this.#socket.readyState !== WebSocket.OPEN) {
      // send() on a closed WebSocket drops the message silently: the reply would never come.
      return Promise.reject(
        new CdpError(`The DevTools connection is closed; cannot send ${method}`),
      );
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { method, resolve, reject });
      this.#socket.send(
        JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }),
      );
    });
  }

  /** Calls `listener` for every event named `method`; returns a function that stops it. */
  on(method: string, listener: EventListener): () => void {
    const entry = Object.assign(
      (params: Record<string, unknown>, sessionId: string | undefined) =>
        listener(params, sessionId),
      { method },
    );
    this.#listeners.add(entry);
    return () => this.#listeners.delete(entry);
  }

  /** Closes the browser and removes its profile; resolves once the process has exited. */
  async close(): Promise<void> {
    // The browser may exit before it answers: wait for the process, not for the reply.
    this.send("Browser.close").catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#process.status.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), 5000))),
    ]);
    clearTimeout(timer);
    if (!exited) {
      this.#process.kill("SIGKILL");
      await this.#process.status;
    }
    if (this.#socket.readyState !== WebSocket.CLOSED) {
      this.#socket.close();
      await this.#closed;
    }
    await this.#stderr;
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }

  #receive(data: string): void {
    const message = JSON.parse(data) as {
      id?: number;
      method?: string;
      params?: Record<string, unknown>;
      result?: Record<string, unknown>;
      error?: { message: string };
      sessionId?: string;
    };
    if (message.id !== undefined) {
      const pending = this.#pending.get(message.id);
      if (pending === undefined) return;
      this.#pending.delete(message.id);
      if (message.error !== undefined) {
        pending.reject(new CdpError(`${pending.method} failed: ${message.error.message}`));
      } else {
        pending.resolve(message.result ?? {});
      }
      return;
    }
    for (const listener of this.#listeners) {
      if (listener.method === message.method) listener(message.params ?? {}, message.sessionId);
    }
  }
}

/** One tab of a {@linkcode Browser}. */
export class Page {
  readonly #browser: Browser;
  readonly #sessionId: string;
  /** Uncaught exceptions and console errors of the page, in order. */
  readonly errors: string[] = [];

  /** A page on the attached session `sessionId`; use {@linkcode Browser.newPage}. */
  constructor(browser: Browser, sessionId: string) {
    this.#browser = browser;
    this.#sessionId = sessionId;
    browser.on("Runtime.exceptionThrown", (params, session) => {
      if (session !== sessionId) return;
      const details = params.exceptionDetails as {
        text?: string;
        exception?: { description?: string };
      };
      this.errors.push(`exception: ${details.exception?.description ?? details.text}`);
    });
    browser.on("Runtime.consoleAPICalled", (params, session) => {
      if (session !== sessionId || params.type !== "error") return;
      const args = params.args as { value?: unknown; description?: string }[];
      this.errors.push(`console.error: ${args.map((a) => a.description ?? a.value).join(" ")}`);
    });
  }

  /** Sends a command to this page's session. */
  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.#browser.send(method, params, this.#sessionId);
  }

  /** Sets the viewport; `mobile` also emulates a touch phone's viewport rules. */
  async setViewport(width: number, height: number, mobile = false): Promise<void> {
    await this.send("Emulation.setDeviceMetricsOverride", {
      width,
      height,
      deviceScaleFactor: 1,
      mobile,
    });
  }

  /** Opens `url` and resolves once its load event fired. */
  async navigate(url: string): Promise<void> {
    let stop = () => {};
    const loaded = new Promise<void>((resolve) => {
      stop = this.#browser.on("Page.loadEventFired", (_, session) => {
        if (session === this.#sessionId) resolve();
      });
    });
    const { errorText } = await this.send("Page.navigate", { url });
    if (errorText) {
      stop();
      throw new CdpError(`Could not open ${url}: ${errorText}`);
    }
    await loaded;
    stop();
  }

  /** Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON. */
  async evaluate<T>(expression: string): Promise<T> {
    const reply = await this.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }) as { result: { value?: T }; exceptionDetails?: { exception?: { description?: string } } };
    if (reply.exceptionDetails !== undefined) {
      throw new CdpError(
        `Evaluating ${
          expression.slice(0, 200)
        } threw: ${reply.exceptionDetails.exception?.description}`,
      );
    }
    return reply.result.value as T;
  }

  /**
   * Resolves to the value of `expression` once it is truthy, checking it now and after each
   * change of the page's DOM. After `timeoutMs`, throws saying `what` was awaited and what
   * `describe` (an expression) gives then.
   */
  async waitFor<T>(
    what: string,
    expression: string,
    timeoutMs: number,
    describe = "''",
  ): Promise<T> {
    const script = `new Promise((resolve) => {
      let timer;
      const observer = new MutationObserver(() => check());
      const finish = (value) => { observer.disconnect(); clearTimeout(timer); resolve(value); };
      const check = () => {
        let value;
        try { value = (${expression}); } catch (error) { value = undefined; }
        if (value) finish({ ok: true, value });
      };
      timer = setTimeout(() => finish({ ok: false, seen: (() => { try { return ${describe}; }
        catch (error) { return String(error); } })() }), ${timeoutMs});
      observer.observe(document, { subtree: true, childList: true, attributes: true,
        characterData: true });
      check();
    })`;
    const outcome = await this.evaluate<{ ok: boolean; value?: T; seen?: unknown }>(script);
    if (!outcome.ok) {
      throw new CdpError(
        `Waited ${timeoutMs} ms for ${what}; saw ${JSON.stringify(outcome.seen)}`,
      );
    }
    return outcome.value as T;
  }

  /** Clicks the centre of the element `selector` matches, with real mouse events. */
  async click(selector: string): Promise<void> {
    const point = await this.evaluate<{ x: number; y: number } | null>(`(() => {
      const element = document.querySelector(${JSON.stringify(selector)});
      if (element === null) return null;
      element.scrollIntoView({ block: "center" });
      const box = element.getBoundingClientRect();
      return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
    })()`);
    if (point === null) throw new CdpError(`Nothing on the page matches ${selector}`);
    for (const type of ["mousePressed", "mouseReleased"]) {
      await this.send("Input.dispatchMouseEvent", {
        type,
        ...point,
        button: "left",
        clickCount: 1,
      });
    }
  }

  /** Types `text` into the focused element, one key at a time. */
  async type(text: string): Promise<void> {
    for (const char of text) await this.send("Input.insertText", { text: char });
  }

  /** Presses a key such as `Enter` or `Tab` (with its code) on the focused element. */
  async press(key: "Enter" | "Tab"): Promise<void> {
    const codes = { Enter: 13, Tab: 9 };
    const base = { key, code: key, windowsVirtualKeyCode: codes[key] };
    await this.send("Input.dispatchKeyEvent", {
      type: "keyDown",
      ...base,
      ...(key === "Enter" ? { text: "\r" } : {}),
    });
    await this.send("Input.dispatchKeyEvent", { type: "keyUp", ...base });
  }

  /** Saves a PNG of the viewport at `path`. */
  async screenshot(path: string): Promise<void> {
    const { data } = await this.send("Page.captureScreenshot", { format: "png" });
    const bytes = Uint8Array.from(atob(String(data)), (c) => c.charCodeAt(0));
    await Deno.writeFile(path, bytes);
  }
}
