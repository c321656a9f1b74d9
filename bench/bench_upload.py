"""A separate gateway's recording reaching the broker: the upload of a finished recording of N MiB (asciicast text)
with the gateway's own client, beside OpenSSH copying the same file to the same disk.

Each run: a session is started and ended through the gateway API (with the installation's gateway credential), its
end reporting the file's SHA-256 and size with ``"uploads": true``, as `gatepass gateway` does; then
``BrokerClient.upload_recording`` (gateway/recording_upload.py's call) sends the file, and the broker streams it to
disk, hashes it, checks it against the report, fsyncs it and links it under its name (broker/recordings/intake.py).
The peer, interleaved: ``ssh direct 'cat > FILE && sync FILE'`` with the file on stdin (the same bytes to the same
disk, made durable; encrypted where the upload is plain HTTP on loopback, as the broker sits behind TLS in
production). MB/s = file bytes / 10^6 / seconds, from the call to the answer (upload) or to ssh's exit (peer).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Bench, heading, machine_line, median, table

MIB = 1024 * 1024


def recording_bytes(size_mib: int) -> bytes:
    """Asciicast-like text: a header line, then event lines of terminal output."""
    line = b'[12.345678, "o", "2026-12-05 00:00:00 plc-01 scan ok: 412 registers read in 18 ms\\r\\n"]\n'
    header = b'{"version": 2, "width": 80, "height": 24, "timestamp": 1796000000}\n'
    return (header + line * (size_mib * MIB // len(line) + 1))[:size_mib * MIB]


def ended_session(bench: Bench, token: str, data: bytes, directory: Path) -> Path:
    """A session ended through the gateway API with its recording reported as still on the gateway; its file."""
    import httpx

    assert bench.installation is not None
    with httpx.Client(base_url=bench.installation.base_url + "/api/v1", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as gateway:
        started = gateway.post("/gateway/sessions", json={"grant_id": bench.grant["id"], "kind": "exec",
                                                          "peer": "127.0.0.1:50000", "command": "bench upload"})
        started.raise_for_status()
        session_id = started.json()["session_id"]
        path = directory / f"{session_id}.cast"
        path.write_bytes(data)
        ended = gateway.post(f"/gateway/sessions/{session_id}/end", json={
            "reason": "client_closed", "bytes_in": 0, "bytes_out": len(data), "detail": None,
            "recording": {"name": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                          "uploads": True}})
        ended.raise_for_status()
    return path


def upload_seconds(bench: Bench, token: str, path: Path) -> float:
    from gateway.broker_client import BrokerClient

    assert bench.installation is not None

    async def send() -> float:
        client = BrokerClient(bench.installation.base_url, token)
        try:
            started = time.perf_counter()
            answer = await client.upload_recording(path.name, path)
            took = time.perf_counter() - started
        finally:
            await client.aclose()
        if answer.get("stored") is not True or answer.get("already_stored"):
            raise RuntimeError(f"the broker did not store {path.name}: {answer}")
        return took

    return asyncio.run(send())


def ssh_seconds(bench: Bench, path: Path, remote: Path) -> float:
    argv = bench.ssh("direct", f"cat > {remote} && sync {remote}")
    with path.open("rb") as source:
        started = time.perf_counter()
        subprocess.run(argv, stdin=source, check=True, timeout=300, capture_output=True)
        took = time.perf_counter() - started
    if remote.stat().st_size != path.stat().st_size:
        raise RuntimeError("ssh copied a different number of bytes")
    remote.unlink()
    return took


def run(size_mib: int, runs: int) -> dict[str, Any]:
    data = recording_bytes(size_mib)
    mb = len(data) / 1e6
    with Bench("upload") as bench:
        assert bench.installation is not None
        token = (bench.installation.root / "data" / "gateway.token").read_text().strip()
        directory = bench.root / "gateway-recordings"
        directory.mkdir()
        stored = bench.installation.root / "data" / "recordings"
        times: dict[str, list[float]] = {"upload": [], "ssh": []}
        for index in range(runs):
            path = ended_session(bench, token, data, directory)
            times["upload"].append(upload_seconds(bench, token, path))
            (stored / path.name).unlink()  # the next run's disk starts as this one's did
            times["ssh"].append(ssh_seconds(bench, path, bench.root / f"ssh-copy-{index}.cast"))
            path.unlink()
        shutil.rmtree(directory, ignore_errors=True)
    mbps = {name: mb / median(values) for name, values in times.items()}
    ratio = mbps["upload"] / mbps["ssh"]
    heading(f"recording upload, {size_mib} MiB, {runs} runs ({machine_line()})")
    print(table(["path", "median s", "MB/s"],
                [[name, f"{median(values):.2f}", f"{mbps[name]:.0f}"] for name, values in times.items()]))
    print(f"upload / ssh cat: {ratio:.2f}")
    return {"size_mib": size_mib, "runs": runs, "mbps": mbps, "ratio": ratio}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200, help="MiB per recording (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (default 3)")
    parser.add_argument("--quick", action="store_true", help="20 MiB, 2 runs")
    args = parser.parse_args(argv)
    if args.quick:
        return run(20, 2)
    return run(max(1, min(args.size, 4096)), max(1, min(args.runs, 20)))


if __name__ == "__main__":
    main()
