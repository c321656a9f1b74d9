// Gatepass live watch of a TCP tunnel: its connection with bytes each way, and a scrolling log of the Modbus requests
// that pass (refused ones marked), from the broker's server-sent events. Frame codes: docs/API.md (live supervision).
// A static file (the Content-Security-Policy forbids inline script); no build step, no libraries; text only, never
// markup, from the feed.
"use strict";

(function () {
  // The log keeps this many requests on the page; older ones go (the audit trail and the tally keep the rest).
  const MAX_LOG = 500;

  function bytes(count) {
    const value = Number(count);
    if (value < 1024) return value + " B";
    if (value < 1024 * 1024) return (value / 1024).toFixed(1) + " KiB";
    return (value / 1024 / 1024).toFixed(1) + " MiB";
  }

  // "a b rest of the text" -> ["a", "b", "rest of the text"]: the last field may hold spaces.
  function fields(text, count) {
    const parts = text.split(" ");
    return parts.slice(0, count - 1).concat([parts.slice(count - 1).join(" ")]);
  }

  class TunnelWatch {
    constructor(root) {
      this.root = root;
      this.status = root.querySelector("[data-watch=status]");
      this.connections = root.querySelector("[data-watch=connections]");
      this.requests = root.querySelector("[data-watch=requests]");
      this.notices = root.querySelector("[data-watch=notices]");
      this.row = null;
    }

    start() {
      const source = new EventSource(this.root.getAttribute("data-tunnel-feed"));
      source.addEventListener("hello", (event) => {
        const hello = JSON.parse(event.data);
        const others = hello.also_watching.length ? " Also watching: " + hello.also_watching.join(", ") + "." : "";
        this.setStatus("Live: " + hello.vendor + "'s tunnel to " + hello.asset + " port " + hello.port + " (" +
                       hello.site + ")." + others +
                       (hello.gateway_connected ? "" : " The gateway is not connected to the broker yet."));
        this.root.setAttribute("data-state", "live");
      });
      source.addEventListener("frames", (event) => {
        for (const frame of JSON.parse(event.data)) this.apply(frame[1], frame[2]);
      });
      source.addEventListener("dropped", (event) => {
        this.notice(JSON.parse(event.data).frames + " events dropped (this view fell behind): the log has gaps.");
      });
      source.addEventListener("ended", (event) => {
        source.close();
        this.setStatus("The watch ended: " + JSON.parse(event.data).why + ".");
        this.root.setAttribute("data-state", "ended");
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED && this.root.getAttribute("data-state") !== "ended") {
          this.setStatus("The watch was refused or lost (the session may have ended). Reload the page to try again.");
          this.root.setAttribute("data-state", "lost");
        }
      });
    }

    apply(code, text) {
      if (code === "co") {
        const [peer, port] = fields(text, 2);
        this.row = document.createElement("tr");
        for (const [label, value] of [["Source", peer], ["Port", port], ["To the asset", bytes(0)],
                                      ["From the asset", bytes(0)], ["State", "open"]]) {
          const cell = document.createElement("td");
          cell.setAttribute("data-label", label);
          cell.textContent = value;
          this.row.append(cell);
        }
        this.connections.replaceChildren(this.row);
      } else if (code === "cb" || code === "cc") {
        if (this.row === null) return;
        const [sent, received, why] = fields(text, 3);
        this.row.cells[2].textContent = bytes(sent);
        this.row.cells[3].textContent = bytes(received);
        if (code === "cc") this.row.cells[4].textContent = "closed" + (why ? ": " + why : "");
      } else if (code === "q" || code === "qx") {
        const [unit, functionCode, range, words] = fields(text, 4);
        const item = document.createElement("li");
        const where = range === "-" ? "" : " addresses " + range;
        const line = new Date().toLocaleTimeString() + " unit " + unit + " function " + functionCode + where +
                     (code === "qx" ? " — refused: " : " — ") + words;
        if (code === "qx") {
          // Marked in words as well as colour; the span keeps the list's numbering.
          const mark = document.createElement("span");
          mark.className = "flag flag-high";
          mark.textContent = line;
          item.className = "refused";
          item.append(mark);
        } else {
          item.textContent = line;
        }
        this.requests.append(item);
        while (this.requests.children.length > MAX_LOG) this.requests.firstElementChild.remove();
      } else if (code === "m") {
        this.notice(text);
      }
    }

    notice(text) {
      const item = document.createElement("li");
      item.textContent = new Date().toLocaleTimeString() + " " + text;
      this.notices.append(item);
    }

    setStatus(text) {
      if (this.status.textContent !== text) this.status.textContent = text;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const root of document.querySelectorAll(".tunnel-watch[data-tunnel-feed]")) new TunnelWatch(root).start();
  });
})();
