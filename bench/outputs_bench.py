"""Peak memory of bringing a large ``/outputs`` back from a build container.

A container writes SIZE MiB of random data into /outputs (FILES files). The same data is
then fetched by each method in turn, three rounds (best of each; ``sync`` before each
fetch), each fetch in a fresh process so that its peak RSS (``VmHWM``) is that method's alone:

* ``extract_outputs``: the streamed tar from the Docker API through stores.extract_outputs
  (what every build does), next to a baseline process that only imports the same modules;
* ``docker cp``: the Docker CLI copying the same directory (the reference point);
* the engine's archive stream read and thrown away: what neither method can go below.

Targets: extract_outputs reaches at least 0.8x the throughput of ``docker cp`` and peaks
under 100 MB for 1 GiB. Run:

    .venv/bin/python bench/outputs_bench.py [--size-mib 1024] [--files 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

IMAGE = os.environ.get("BUTIDO_TEST_IMAGE", "airflow-butido/debian:bookworm")
TARGET_MB = 100
TARGET_RATIO = 0.8  # of docker cp's throughput

EXTRACT = """
import json, resource, sys, time
from pathlib import Path
import docker
from airflow_butido.container import BuildContainer, ContainerSpec
from airflow_butido.stores import extract_outputs
api = docker.APIClient(base_url=sys.argv[1], timeout=120)
container = BuildContainer(api, ContainerSpec(name="", image=""))
container.id = sys.argv[2]
start = time.monotonic()
before = resource.getrusage(resource.RUSAGE_SELF)
cpu_before = before.ru_utime + before.ru_stime
if sys.argv[3] == "extract":
    artifacts = extract_outputs(container.outputs(), Path(sys.argv[4]))
    result = {a.path: a.sha256 for a in artifacts}
elif sys.argv[3] == "stream":
    stream = container.outputs()
    result = {"bytes": sum(len(chunk) for chunk in stream)}
    stream.close()
else:
    result = {}
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, this process's own peak: ru_maxrss also counts the parent's memory at the fork
# that started this interpreter (Linux keeps it across exec)
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "seconds": time.monotonic() - start,
    "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_before,
    "maxrss_kb": peak_kb,
    "sha256": result,
}))
"""

DOCKER_CP = """
import json, resource, subprocess, sys, time
start = time.monotonic()
subprocess.run(["docker", "cp", sys.argv[1] + ":/outputs", sys.argv[2]], check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "seconds": time.monotonic() - start,
    "cpu_seconds": usage.ru_utime + usage.ru_stime,
    "maxrss_kb": usage.ru_maxrss,
}))
"""


ENGINE_PROCESSES = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")


def engine_cpu_seconds() -> float:
    """CPU seconds used so far by the Docker engine's processes on this machine: the engine
    builds the archive both methods receive, on the same cores."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        if name in ENGINE_PROCESSES:
            fields = rest.split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_python(code: str, *args: str) -> dict:
    engine = engine_cpu_seconds()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    found["engine_cpu_seconds"] = engine_cpu_seconds() - engine
    return found


def measure(size_mib: int, files: int, docker_url: str, rounds: int = 3) -> dict[str, dict]:
    """Write ``size_mib`` MiB into /outputs of a container, then fetch it with
    extract_outputs and with ``docker cp`` (and only read the archive stream), each in a
    fresh process, ``rounds`` times alternating; the hashes must agree. Returns the
    fastest round of each (the peak RSS of extract_outputs is the highest of all rounds):
    ``{"baseline"|"stream"|"extract"|"docker_cp": {"seconds", "cpu_seconds", "maxrss_kb"}}``."""
    import docker

    from airflow_butido.container import BuildContainer, ContainerSpec, InputFile, job_labels

    api = docker.APIClient(base_url=docker_url, timeout=120)
    job = str(uuid.uuid4())
    spec = ContainerSpec(
        name=f"butido-bench-outputs-{job}",
        image=IMAGE,
        labels=job_labels("bench", "0", job, "bench"),
    )
    per_file = size_mib // files
    script = (
        "#!/bin/sh\nset -e; mkdir /outputs; "
        f"for i in $(seq 1 {files}); do "
        f"dd if=/dev/urandom of=/outputs/f$i.bin bs=1M count={per_file} status=none; done; "
        "cd /outputs && sha256sum *.bin"
    )
    work = Path(tempfile.mkdtemp(prefix="butido-bench-"))
    try:
        with BuildContainer(api, spec) as container:
            container.create()
            container.put_files([InputFile("/script", data=script.encode(), mode=0o755)])
            container.start()
            expected = {}
            for line in container.script_lines():
                digest, name = line.split()
                expected[name] = digest
            if container.wait() != 0:
                raise SystemExit("writing /outputs in the container failed")
            assert container.id is not None
            baseline = run_python(EXTRACT, docker_url, container.id, "baseline")
            extracts, copies, streams = [], [], []
            for _ in range(rounds):  # alternating, so both see the same load
                streams.append(run_python(EXTRACT, docker_url, container.id, "stream"))
                os.sync()  # each method starts with no dirty pages to write back
                found = run_python(EXTRACT, docker_url, container.id, "extract", str(work / "x"))
                if found["sha256"] != expected:
                    raise SystemExit("extracted files differ from the container's")
                extracts.append(found)
                shutil.rmtree(work / "x")
                os.sync()
                copies.append(run_python(DOCKER_CP, container.id, str(work / "cp")))
                shutil.rmtree(work / "cp")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        api.close()
    extracted = min(extracts, key=lambda r: r["seconds"])
    extracted["maxrss_kb"] = max(r["maxrss_kb"] for r in extracts)
    copied = min(copies, key=lambda r: r["seconds"])
    streamed = min(streams, key=lambda r: r["seconds"])
    return {"baseline": baseline, "stream": streamed, "extract": extracted, "docker_cp": copied}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, alternating")
    parser.add_argument(
        "--docker-url", default=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    )
    args = parser.parse_args()
    found = measure(args.size_mib, args.files, args.docker_url, args.rounds)
    mib = args.size_mib // args.files * args.files
    head = f"{'method':<34} {'seconds':>8} {'MiB/s':>8} {'CPU s':>6} {'engine CPU s':>12}"
    print(f"\n{head} {'peak RSS MB':>12}")
    for label, key in (
        ("python + imports (baseline)", "baseline"),
        ("archive stream only, discarded", "stream"),
        ("extract_outputs (streamed)", "extract"),
        ("docker cp (CLI process)", "docker_cp"),
    ):
        r = found[key]
        rate = f"{mib / r['seconds']:8.0f}" if key != "baseline" else f"{'':>8}"
        cpu = f"{r['cpu_seconds']:6.2f} {r['engine_cpu_seconds']:12.2f}"
        print(f"{label:<34} {r['seconds']:8.2f} {rate} {cpu} {r['maxrss_kb'] / 1024:12.1f}")
    peak = found["extract"]["maxrss_kb"] / 1024
    ratio = found["docker_cp"]["seconds"] / found["extract"]["seconds"]
    ok = peak < TARGET_MB and ratio >= TARGET_RATIO
    print(
        f"\nextract_outputs: {ratio:.2f}x the throughput of docker cp (target >= "
        f"{TARGET_RATIO}x), peak {peak:.1f} MB for {mib} MiB (target < {TARGET_MB} MB): "
        + ("OK" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
