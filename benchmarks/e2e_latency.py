"""End-to-end latency on the embedded default: from a PATCH's 204 on the Person API to the
Tenure API showing the new name, over N updates (default 500), one at a time.

It starts ``tidings up`` in a temporary folder on free ports, creates 20 people each in a
tenure, renames them round-robin and polls the tenure until the copy changed (the polling
GET adds its own ~1 ms to each figure).

Usage: .venv/bin/python benchmarks/e2e_latency.py [N] [--broker URL] [--database-url URL]
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_base_port() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        ok = True
        for port in range(base, base + 3):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError("no free ports")


async def measure(base: int, token: str, n: int) -> list[float]:
    person, tenure = f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:
        people = []
        for i in range(20):
            r = await http.post(
                f"{person}/api/v1/persons", json={"firstName": f"P{i}", "surname": "Start"}
            )
            pid = r.json()["id"]
            r = await http.post(
                f"{tenure}/api/v1/tenures",
                json={
                    "householdMembers": [
                        {"id": pid, "fullName": f"P{i} Start", "isResponsible": True}
                    ]
                },
            )
            people.append((pid, r.json()["id"]))
        await asyncio.sleep(1)
        latencies = []
        for i in range(n):
            pid, tid = people[i % len(people)]
            surname = f"S{i}"
            r = await http.patch(f"{person}/api/v1/persons/{pid}", json={"surname": surname})
            assert r.status_code == 204, r.text
            start = time.perf_counter()
            while True:
                members = (await http.get(f"{tenure}/api/v1/tenures/{tid}")).json()[
                    "householdMembers"
                ]
                if members[0]["fullName"].endswith(surname):
                    break
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies


def main() -> None:
    args = sys.argv[1:]
    n = int(args.pop(0)) if args and args[0].isdigit() else 500
    base = free_base_port()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".tidings"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidings.cli",
                "up",
                "--home",
                str(home),
                "--base-port",
                str(base),
                *args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if "tidings is up" in line:
                break
        try:
            token = (home / "dev-token").read_text().strip()
            latencies = sorted(asyncio.run(measure(base, token, n)))
        finally:
            proc.send_signal(2)
            proc.wait(timeout=30)
    q = statistics.quantiles(latencies, n=100)
    print(
        f"PATCH 204 -> tenure shows the change, {n} updates: "
        f"p50={q[49]:.1f} ms p95={q[94]:.1f} ms p99={q[98]:.1f} ms max={latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
