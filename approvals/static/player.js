// Gatepass session playback: plays an asciicast v2 recording (https://docs.asciinema.org/manual/asciicast/v2/)
// in a fixed-size terminal grid. A static file (the Content-Security-Policy forbids inline script); no build
// step, no libraries. The terminal is the same minimal VT100 subset as broker/recordings.py's Screen: printable
// text with wrap, CR, LF, BS, tab, CSI A/B/C/D/H/f (cursor) and K/J (erase); SGR and every other sequence
// are ignored. Keep the two in step: the plain-text transcript page is rendered by the Python one.
"use strict";

(function () {
  // Long pauses in a session are shortened to this many seconds of playback (asciinema's idle_time_limit).
  const IDLE_LIMIT = 2.0;
  // Lines kept above the screen; older ones are dropped (the transcript page has them all).
  const SCROLLBACK = 2000;
  const CSI = /\x1b\[([0-?]*)([ -/]*)([@-~])/y;
  // The start of an escape sequence cut off at the end of an output event: kept for the next one, as a
  // terminal's parser keeps its state between writes.
  const INCOMPLETE = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)$/y;
  const MAX_PENDING = 512;
  const OTHER_ESCAPE = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b]*(?:\x1b\\)?|\x1b[ -/]*[0-~]|\x1b/y;

  // The size of the bytes a base64 text stands for (no decoding: only the marker shows them).
  function binarySize(text) {
    return Math.floor(text.length / 4) * 3 - (text.slice(-2).split("=").length - 1);
  }

  class Screen {
    constructor(width, height) {
      this.width = width;
      this.height = height;
      this.lines = [[]];
      this.row = 0;
      this.col = 0;
      this.pending = "";
    }

    get top() { return Math.max(0, this.lines.length - this.height); }

    line(row) {
      while (this.lines.length <= row) this.lines.push([]);
      return this.lines[row];
    }

    put(char) {
      if (this.col >= this.width) { this.col = 0; this.row += 1; }
      const line = this.line(this.row);
      while (line.length < this.col) line.push(" ");
      line[this.col] = char;
      this.col += 1;
    }

    erase(row, start, end) {
      const line = this.line(row);
      const stop = end === null ? line.length : Math.min(end, line.length);
      for (let index = start; index < stop; index += 1) line[index] = " ";
    }

    csi(params, final) {
      if (/^[?><=]/.test(params)) return; // private modes: nothing on the screen changes
      const numbers = params ? params.split(";").map((p) => (/^\d+$/.test(p) ? parseInt(p, 10) : 0)) : [];
      const first = numbers.length ? numbers[0] : 0;
      const count = Math.max(1, first);
      const top = this.top;
      switch (final) {
        case "A": this.row = Math.max(top, this.row - count); break;
        case "B": this.row = Math.min(top + this.height - 1, this.row + count); break;
        case "C": this.col = Math.min(this.width - 1, this.col + count); break;
        case "D": this.col = Math.max(0, Math.min(this.col, this.width) - count); break;
        case "H":
        case "f": {
          const line = numbers.length ? Math.max(1, first) : 1;
          const column = numbers.length > 1 ? Math.max(1, numbers[1]) : 1;
          this.row = top + Math.min(line, this.height) - 1;
          this.col = Math.min(column, this.width) - 1;
          break;
        }
        case "K": {
          const spans = { 0: [this.col, null], 1: [0, this.col + 1], 2: [0, null] };
          const [start, end] = spans[first] || [0, 0];
          this.erase(this.row, start, end);
          break;
        }
        case "J": {
          const bottom = top + this.height;
          let from;
          let to;
          if (first === 0) { this.erase(this.row, this.col, null); from = this.row + 1; to = bottom; }
          else if (first === 1) { this.erase(this.row, 0, this.col + 1); from = top; to = this.row; }
          else { from = top; to = bottom; }
          for (let row = from; row < to; row += 1) if (row < this.lines.length) this.lines[row] = [];
          break;
        }
        default: break;
      }
      this.line(this.row);
    }

    feed(input) {
      const text = this.pending + input;
      this.pending = "";
      let position = 0;
      while (position < text.length) {
        const char = text[position];
        if (char === "\x1b") {
          CSI.lastIndex = position;
          const match = CSI.exec(text);
          if (match) { this.csi(match[1], match[3]); position = CSI.lastIndex; continue; }
          INCOMPLETE.lastIndex = position;
          if (text.length - position <= MAX_PENDING && INCOMPLETE.test(text)) {
            this.pending = text.slice(position);
            break;
          }
          OTHER_ESCAPE.lastIndex = position;
          const other = OTHER_ESCAPE.exec(text);
          position = other ? Math.max(position + 1, OTHER_ESCAPE.lastIndex) : position + 1;
          continue;
        }
        // One code point (a surrogate pair stays together, as Python's str keeps it one character).
        const point = String.fromCodePoint(text.codePointAt(position));
        position += point.length;
        if (point === "\r") this.col = 0;
        else if (point === "\n") { this.row += 1; this.line(this.row); }
        else if (point === "\b") this.col = Math.max(0, Math.min(this.col, this.width) - 1);
        else if (point === "\t") this.col = Math.min(this.width - 1, (Math.floor(this.col / 8) + 1) * 8);
        else if (point >= " " && point !== "\x7f" && !(point >= "\x80" && point <= "\x9f")) this.put(point);
      }
      const excess = this.lines.length - this.height - SCROLLBACK;
      if (excess > 0) { this.lines.splice(0, excess); this.row -= excess; }
    }

    resize(width, height) {
      this.width = Math.max(1, width);
      this.height = Math.max(1, height);
    }

    // One asciicast event, [time, code, text], as broker/recordings/terminal.py play applies it: output, output
    // that was not text (base64 from the gateway: a marker, as binary_marker writes it) and a resize. Other codes
    // (input, the gateway's messages) change nothing here: the watch view shows its messages itself.
    apply(event) {
      const code = event[1];
      if (code === "o") this.feed(event[2]);
      else if (code === "ob") this.feed("\r\n[binary output: " + binarySize(event[2]) + " bytes]\r\n");
      else if (code === "r") {
        const match = /^(\d+)x(\d+)$/.exec(event[2]);
        if (match) this.resize(parseInt(match[1], 10), parseInt(match[2], 10));
      }
    }

    // The visible rows, each exactly ``width`` characters.
    rows() {
      const rows = [];
      const top = this.top;
      for (let index = 0; index < this.height; index += 1) {
        const line = (this.lines[top + index] || []).slice(0, this.width);
        while (line.length < this.width) line.push(" ");
        rows.push(line);
      }
      return rows;
    }

    // Draws the visible rows into ``element`` (a <pre>), the cursor a <span class="cursor">. Text nodes only:
    // what a session printed is never markup.
    draw(element) {
      const rows = this.rows();
      const cursorRow = this.row - this.top;
      const cursorCol = Math.min(this.col, this.width - 1);
      element.style.width = this.width + "ch";
      element.textContent = "";
      rows.forEach((row, index) => {
        const line = index < rows.length - 1 ? "\n" : "";
        if (index === cursorRow) {
          element.append(row.slice(0, cursorCol).join(""));
          const cursor = document.createElement("span");
          cursor.className = "cursor";
          cursor.textContent = row[cursorCol];
          element.append(cursor, row.slice(cursorCol + 1).join("") + line);
        } else {
          element.append(row.join("") + line);
        }
      });
    }
  }

  function parseCast(text) {
    const lines = text.split("\n");
    let header;
    try { header = JSON.parse(lines[0]); } catch (error) { throw new Error("the first line is not a JSON header"); }
    if (!header || header.version !== 2 || !(header.width > 0) || !(header.height > 0)) {
      throw new Error("this is not an asciicast version 2 recording");
    }
    const events = [];
    let truncated = false;
    for (let index = 1; index < lines.length; index += 1) {
      if (!lines[index].trim()) continue;
      let item = null;
      try { item = JSON.parse(lines[index]); } catch (error) { item = null; }
      if (!Array.isArray(item) || item.length !== 3 || typeof item[0] !== "number" || typeof item[2] !== "string") {
        truncated = true; // a cut-off last line (the server checks the rest); stop here
        break;
      }
      events.push(item);
    }
    // Playback times with long idle gaps shortened.
    let previous = 0;
    let at = 0;
    for (const event of events) {
      at += Math.min(Math.max(0, event[0] - previous), IDLE_LIMIT);
      previous = event[0];
      event.push(at);
    }
    return { header, events, truncated };
  }

  class Player {
    constructor(root) {
      this.root = root;
      this.screenElement = root.querySelector("[data-player=screen]");
      this.playButton = root.querySelector("[data-player=play]");
      this.restartButton = root.querySelector("[data-player=restart]");
      this.endButton = root.querySelector("[data-player=end]");
      this.clock = root.querySelector("[data-player=clock]");
      this.status = root.querySelector("[data-player=status]");
      this.speedButtons = Array.from(root.querySelectorAll("[data-player-speed]"));
      this.speed = 1;
      this.playing = false;
      this.timer = null;
    }

    async load() {
      try {
        const response = await fetch(this.root.getAttribute("data-cast"), { credentials: "same-origin",
                                                                            cache: "no-store" });
        if (!response.ok) throw new Error("the server answered " + response.status);
        this.cast = parseCast(await response.text());
      } catch (error) {
        this.setStatus("The recording cannot be played: " + error.message + ".");
        this.root.setAttribute("data-state", "error");
        return;
      }
      this.duration = this.cast.events.length ? this.cast.events[this.cast.events.length - 1][3] : 0;
      this.reset();
      this.playButton.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
      this.restartButton.addEventListener("click", () => { this.pause(); this.reset(); this.play(); });
      this.endButton.addEventListener("click", () => this.jumpToEnd());
      for (const button of this.speedButtons) {
        button.addEventListener("click", () => this.setSpeed(parseFloat(button.getAttribute("data-player-speed"))));
      }
      this.screenElement.addEventListener("keydown", (event) => {
        if (event.key === " " || event.key === "k") { event.preventDefault(); this.playing ? this.pause() : this.play(); }
        else if (event.key === "End") { event.preventDefault(); this.jumpToEnd(); }
      });
      for (const button of [this.playButton, this.restartButton, this.endButton, ...this.speedButtons]) {
        button.disabled = false;
      }
      const size = this.cast.header.width + "×" + this.cast.header.height;
      this.setStatus("Ready: " + this.cast.events.length + " events, " + this.duration.toFixed(1) +
                     " s of playback, terminal " + size + "." +
                     (this.cast.truncated ? " The recording ends with a cut-off line." : ""));
      this.root.setAttribute("data-state", "ready");
    }

    reset() {
      this.terminal = new Screen(this.cast.header.width, this.cast.header.height);
      this.next = 0;
      this.position = 0;
      this.render();
    }

    advanceTo(position) {
      const events = this.cast.events;
      while (this.next < events.length && events[this.next][3] <= position) {
        this.terminal.apply(events[this.next]);
        this.next += 1;
      }
      this.position = Math.min(position, this.duration);
      this.render();
      if (this.next >= events.length) this.finished();
    }

    play() {
      if (this.next >= this.cast.events.length) this.reset();
      this.playing = true;
      this.root.setAttribute("data-state", "playing");
      this.playButton.textContent = "Pause";
      this.setStatus("Playing at " + this.speed + "×.");
      this.startedAt = performance.now() - (this.position / this.speed) * 1000;
      this.tick();
    }

    tick() {
      if (!this.playing) return;
      this.advanceTo(((performance.now() - this.startedAt) / 1000) * this.speed);
      if (this.playing) this.timer = setTimeout(() => this.tick(), 30);
    }

    pause() {
      if (!this.playing) return;
      this.playing = false;
      clearTimeout(this.timer);
      this.root.setAttribute("data-state", "paused");
      this.playButton.textContent = "Play";
      this.setStatus("Paused at " + this.position.toFixed(1) + " s.");
    }

    jumpToEnd() {
      this.playing = false;
      clearTimeout(this.timer);
      this.advanceTo(Infinity);
    }

    finished() {
      this.playing = false;
      clearTimeout(this.timer);
      this.playButton.textContent = "Play";
      this.root.setAttribute("data-state", "ended");
      this.setStatus("Played to the end.");
    }

    setSpeed(speed) {
      this.speed = speed;
      for (const button of this.speedButtons) {
        button.setAttribute("aria-pressed", String(parseFloat(button.getAttribute("data-player-speed")) === speed));
      }
      if (this.playing) this.startedAt = performance.now() - (this.position / this.speed) * 1000;
    }

    setStatus(text) {
      if (this.status.textContent !== text) this.status.textContent = text;
    }

    render() {
      this.terminal.draw(this.screenElement);
      this.clock.textContent = this.position.toFixed(1) + " s / " + this.duration.toFixed(1) + " s";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const root of document.querySelectorAll(".player[data-cast]")) new Player(root).load();
  });
  // The live watch view (watch.js) applies its frames and draws with the same terminal (apply, draw).
  window.GatepassScreen = Screen;
})();
