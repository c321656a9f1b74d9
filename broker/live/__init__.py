"""Live supervision (issue 13): people watch a vendor's session as it runs, tell the vendor something, end it.

How a session's output reaches an observer, without the gateway importing anything of the broker's:

    gateway                                   broker (this package)                     observers
    ───────                                   ─────────────────────                     ─────────
    GET /gateway/live (SSE, held open) ◀───── watch / unwatch / notice / end ◀──────── join, leave, Send message,
                                                                                       End session
    POST /gateway/live/{session}/frames ────▶ LiveHub: one Feed per watched session ──▶ one bounded queue per
      (only while watched; a capability                                                observer, drop-oldest,
       token per feed, no database)                                                    "frames dropped" marker

A shell or exec session's frames are its terminal's (asciicast codes); a TCP tunnel's are its connection, byte
totals and Modbus requests (codes in docs/API.md). An unwatched session costs the gateway one attribute check per
chunk. A slow or stalled observer loses frames
from its own queue (and is told how many); it never slows the session, the gateway or the other observers.

Modules: ``hub`` (the in-memory fan-out, event-loop only), ``supervision`` (who may watch, what is audited).
The hub lives in one broker process: with several replicas a gateway's live stream and an observer must meet
on the same one (sticky routing); that is a known limit of this first slice.
"""
