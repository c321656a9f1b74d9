// Gatepass live watch view: follows a session as it runs, from the broker's server-sent events, applied and drawn
// by the recordings player's terminal (player.js, loaded first, exports it as window.GatepassScreen). A static
// file (the Content-Security-Policy forbids inline script); no build step, no libraries.
"use strict";

(function () {
  // Redraws at most this often (ms): bulk output arrives in many frames, a person reads a screen.
  const REDRAW_MS = 30;

  class Watch {
    constructor(root) {
      this.root = root;
      this.screenElement = root.querySelector("[data-watch=screen]");
      this.status = root.querySelector("[data-watch=status]");
      this.notices = root.querySelector("[data-watch=notices]");
      this.terminal = new window.GatepassScreen(80, 24);
      this.timer = null;
      this.render();
    }

    start() {
      const source = new EventSource(this.root.getAttribute("data-watch-feed"));
      this.source = source;
      source.addEventListener("hello", (event) => {
        const hello = JSON.parse(event.data);
        const others = hello.also_watching.length ? " Also watching: " + hello.also_watching.join(", ") + "." : "";
        this.setStatus("Live: " + hello.vendor + " on " + hello.asset + " (" + hello.site + ")." + others +
                       (hello.gateway_connected ? "" : " The gateway is not connected to the broker yet."));
        this.root.setAttribute("data-state", "live");
      });
      source.addEventListener("frames", (event) => {
        for (const frame of JSON.parse(event.data)) this.apply(frame);
        this.schedule();
      });
      source.addEventListener("dropped", (event) => {
        const count = JSON.parse(event.data).frames;
        this.notice(count + " frames dropped (this view fell behind): the screen may be incomplete until it is redrawn.");
      });
      source.addEventListener("ended", (event) => {
        source.close();
        this.render();
        this.setStatus("The watch ended: " + JSON.parse(event.data).why + ". The recording is on the review pages.");
        this.root.setAttribute("data-state", "ended");
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED && this.root.getAttribute("data-state") !== "ended") {
          this.setStatus("The watch was refused or lost (the session may have ended). Reload the page to try again.");
          this.root.setAttribute("data-state", "lost");
        }
      });
    }

    apply(frame) {
      this.terminal.apply(frame); // output, binary output, resize: as the recordings player plays them
      if (frame[1] === "m") {
        // What the gateway wrote on the vendor's stderr: on the screen as they see it, and in the list.
        this.terminal.feed("\r\n" + frame[2] + "\r\n");
        this.notice(frame[2]);
      }
    }

    notice(text) {
      const item = document.createElement("li");
      item.textContent = new Date().toLocaleTimeString() + " " + text;
      this.notices.append(item);
    }

    schedule() {
      if (this.timer === null) this.timer = setTimeout(() => { this.timer = null; this.render(); }, REDRAW_MS);
    }

    setStatus(text) {
      if (this.status.textContent !== text) this.status.textContent = text;
    }

    render() {
      this.terminal.draw(this.screenElement);
    }
  }

  // Send message without leaving the page (leaving would end this watch, and the vendor would see it).
  function postInPlace(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      const status = document.querySelector("[data-watch=status]");
      button.disabled = true;
      try {
        const answer = await fetch(form.action, { method: "POST", body: new URLSearchParams(new FormData(form)),
                                                  credentials: "same-origin", redirect: "manual" });
        if (answer.type === "opaqueredirect" || answer.ok) {
          status.textContent = "Message sent: it is on the vendor's terminal and in the recording.";
          form.reset();
        } else {
          status.textContent = "The message was refused (HTTP " + answer.status + "); reload the page for the reason.";
        }
      } catch (error) {
        status.textContent = "The message could not be sent: " + error.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const root of document.querySelectorAll(".watch[data-watch-feed]")) new Watch(root).start();
    for (const form of document.querySelectorAll("form[data-watch-post]")) postInPlace(form);
  });
})();
