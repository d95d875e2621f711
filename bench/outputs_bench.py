"""Peak memory of bringing a large ``/outputs`` back from a build container.

A container writes SIZE MiB of random data into /outputs (FILES files). The same data is
then fetched twice, each in a fresh process so that ``ru_maxrss`` is that method's alone:

* ``extract_outputs``: the streamed tar from the Docker API through stores.extract_outputs
  (what every build does), next to a baseline process that only imports the same modules;
* ``docker cp``: the Docker CLI copying the same directory (the reference point).

Target: extract_outputs peaks under 200 MB for 1 GiB. Run:

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
import time
import uuid
from pathlib import Path

IMAGE = os.environ.get("BUTIDO_TEST_IMAGE", "airflow-butido/debian:bookworm")
TARGET_MB = 200

EXTRACT = """
import json, resource, sys, time
import docker
from airflow_butido.container import BuildContainer, ContainerSpec
from airflow_butido.stores import extract_outputs
api = docker.APIClient(base_url=sys.argv[1], timeout=120)
container = BuildContainer(api, ContainerSpec(name="", image=""))
container.id = sys.argv[2]
start = time.monotonic()
if sys.argv[3] == "extract":
    artifacts = extract_outputs(container.outputs(), sys.argv[4])
    result = {a.path: a.sha256 for a in artifacts}
else:
    result = {}
print(json.dumps({
    "seconds": time.monotonic() - start,
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "sha256": result,
}))
"""

DOCKER_CP = """
import json, resource, subprocess, sys, time
start = time.monotonic()
subprocess.run(["docker", "cp", sys.argv[1] + ":/outputs", sys.argv[2]], check=True)
print(json.dumps({
    "seconds": time.monotonic() - start,
    "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""


def run_python(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument(
        "--docker-url", default=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    )
    args = parser.parse_args()

    import docker

    from airflow_butido.container import BuildContainer, ContainerSpec, InputFile, job_labels

    api = docker.APIClient(base_url=args.docker_url, timeout=120)
    job = str(uuid.uuid4())
    spec = ContainerSpec(
        name=f"butido-bench-outputs-{job}",
        image=IMAGE,
        labels=job_labels("bench", "0", job, "bench"),
    )
    per_file = args.size_mib // args.files
    script = (
        "set -e; mkdir /outputs; "
        f"for i in $(seq 1 {args.files}); do "
        f"dd if=/dev/urandom of=/outputs/f$i.bin bs=1M count={per_file} status=none; done; "
        "cd /outputs && sha256sum *.bin"
    )
    work = Path(tempfile.mkdtemp(prefix="butido-bench-"))
    try:
        with BuildContainer(api, spec) as container:
            container.create()
            container.put_files([InputFile("/script", data=script.encode())])
            container.start()
            t0 = time.monotonic()
            lines, exec_id = container.exec_stream()
            expected = {}
            for line in lines:
                digest, name = line.split()
                expected[name] = digest
            if container.exit_code(exec_id) != 0:
                raise SystemExit("writing /outputs in the container failed")
            print(f"container wrote {per_file * args.files} MiB in {time.monotonic() - t0:.1f} s")

            baseline = run_python(EXTRACT, args.docker_url, container.id, "baseline")
            extracted = run_python(
                EXTRACT, args.docker_url, container.id, "extract", str(work / "x")
            )
            if extracted["sha256"] != expected:
                raise SystemExit("extracted files differ from the container's")
            shutil.rmtree(work / "x")
            copied = run_python(DOCKER_CP, container.id, str(work / "cp"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        api.close()

    mib = per_file * args.files
    print(f"\n{'method':<34} {'seconds':>8} {'MiB/s':>8} {'peak RSS MB':>12}")
    for label, r in (
        ("python + imports (baseline)", baseline),
        ("extract_outputs (streamed)", extracted),
        ("docker cp (CLI process)", copied),
    ):
        secs = r["seconds"]
        rate = f"{mib / secs:8.0f}" if label != "python + imports (baseline)" else f"{'':>8}"
        print(f"{label:<34} {secs:8.2f} {rate} {r['maxrss_kb'] / 1024:12.1f}")
    peak = extracted["maxrss_kb"] / 1024
    verdict = "OK" if peak < TARGET_MB else "OVER TARGET"
    print(
        f"\nextract_outputs peak {peak:.1f} MB for {mib} MiB: {verdict} (target < {TARGET_MB} MB)"
    )
    return 0 if peak < TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
