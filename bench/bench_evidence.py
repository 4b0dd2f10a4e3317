"""What do waivers and a signed attestation add to a run? Ratios, not seconds.

One image (`no-conda`, which fails exactly the conda stage) is certified alternately, after a warm-up each:
plain; with --waivers (one valid waiver, one stale); and with --waivers plus --attest signed with a fresh ECDSA
P-256 key. Also timed in-process: loading the waiver file (PyYAML + pydantic), and signing and verifying one
envelope (securesystemslib). Printed: each mode's median wall time as a ratio of the plain run's.

    python bench/bench_evidence.py [--repeat 5] [--image no-conda]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "fixtures" / "profiles" / "fixture.toml"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
WAIVERS = """\
waivers:
  - stage: conda
    images: "*"
    justification: "bench"
    expires: 2099-01-01
  - stage: gpu
    images: "nothing/*"
    justification: "stale on purpose"
    expires: 2099-01-01
"""


def key_pair(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "k.pem", folder / "k.pub"
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    private.write_bytes(key.private_bytes(encoding, pkcs8, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def timed_run(args: list[str], cwd: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run([*PYTEST, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stdout[-500:]}{proc.stderr[-500:]}")
    return elapsed


def in_process(folder: Path, private: Path, public: Path, repeat: int) -> dict[str, float]:
    """Median seconds of the pieces: waiver load, sign, verify."""
    from pytest_baseimage import waivers
    from pytest_baseimage.attest import dsse

    path = folder / "waivers.yml"
    load = []
    for _ in range(repeat):
        started = time.perf_counter()
        waivers.load(str(path))
        load.append(time.perf_counter() - started)
    signer = dsse.signer_from_pem(private.read_bytes(), "bench")
    key = dsse.public_key_from_pem(public.read_bytes(), "bench")
    body = {"_type": "https://in-toto.io/Statement/v1", "predicate": {"result": "PASSED"}}
    sign, check = [], []
    for _ in range(repeat * 20):
        started = time.perf_counter()
        envelope = dsse.envelope(body, signer)
        sign.append(time.perf_counter() - started)
        started = time.perf_counter()
        dsse.verified_statement(envelope, key)
        check.append(time.perf_counter() - started)
    return {"waiver load": statistics.median(load), "sign": statistics.median(sign), "verify": statistics.median(check)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--image", default="no-conda")
    args = parser.parse_args()
    image = f"pytest-baseimage-fixture/{args.image}:latest"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "waivers.yml").write_text(WAIVERS)
        private, public = key_pair(folder)
        base = [f"--base-image={image}", f"--profile={PROFILE}"]
        modes = {
            "plain": base,
            "waivers": [*base, "--waivers=waivers.yml"],
            "waivers+attest": [*base, "--waivers=waivers.yml", "--attest=v.intoto.json", f"--attest-key={private}"],
        }
        times: dict[str, list[float]] = {name: [] for name in modes}
        for mode in modes.values():  # warm-up
            timed_run(mode, folder)
        for _ in range(args.repeat):
            for name, mode in modes.items():
                times[name].append(timed_run(mode, folder))
        pieces = in_process(folder, private, public, args.repeat)
    plain = statistics.median(times["plain"])
    for name, values in times.items():
        print(f"{name:>15}: {statistics.median(values) / plain:.3f} x plain (median of {len(values)})")
    for name, seconds in pieces.items():
        print(f"{name:>15}: {seconds / plain:.5f} x plain ({seconds * 1000:.2f} ms)")


if __name__ == "__main__":
    main()
