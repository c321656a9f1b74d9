// Gatepass web pages: confirmations, copy buttons, and the 2-second refresh of the supervisor's lists.
// A static file (the Content-Security-Policy forbids inline script); no build step, no libraries.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  const value = source.value !== undefined ? source.value : source.textContent;
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(value).then(done, () => selectText(source));
  } else {
    selectText(source);
  }
});

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// Someone typing a comment or a shorter window must not lose it to a refresh.
function busy(container) {
  const active = document.activeElement;
  if (active && container.contains(active) && active.matches("input, textarea, select")) return true;
  return Array.from(container.querySelectorAll("input:not([type=hidden]), textarea"))
    .some((field) => field.value !== "");
}

function startLiveLists() {
  const status = document.querySelector("[data-live-source]");
  if (!status) return;
  const source = status.getAttribute("data-live-source");
  let version = null;
  async function refresh() {
    try {
      const response = await fetch(source, { credentials: "same-origin", cache: "no-store",
                                              headers: { "Accept": "application/json" } });
      if (response.redirected || response.status === 401) {
        status.textContent = "Signed out: reload the page to sign in again.";
        return;
      }
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      if (data.version !== version) {
        let skipped = false;
        for (const container of document.querySelectorAll("[data-live]")) {
          const html = data[container.getAttribute("data-live")];
          if (typeof html !== "string") continue;
          // The fragments are rendered and escaped by the server, for this session only.
          if (busy(container)) skipped = true;
          else container.innerHTML = html;
        }
        if (!skipped) version = data.version;
      }
      status.textContent = "Lists update every 2 seconds. Last update " + new Date().toLocaleTimeString() + ".";
    } catch (error) {
      status.textContent = "Could not refresh the lists (" + error.message + "); retrying.";
    }
    setTimeout(refresh, 2000);
  }
  setTimeout(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", startLiveLists);
