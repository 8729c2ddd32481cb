"""`make demo`: the whole story on a local cluster (``devcluster.cluster_demo``), and its offline act.

``signing_story()`` runs in a temporary directory on this machine: the parameters are published
as `iris-1.0.0.tar.gz` + `iris-1.0.0.tar.gz.sig` on a loopback HTTP server (standing in
for S3), fetched the way the init container does, and re-checked the way the model server
does before loading. Then a tampered archive and a wrong key are refused, leaving the
destination empty.
"""

from __future__ import annotations

import http.server
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel

from devcluster.iris import train, write_keys
from devcluster.story import pack
from modeldeploy.contract.pod import TerminationRecord
from modeldeploy.params import fetch, signing
from modeldeploy.params.errors import ParametersError, VerificationError

console = Console(highlight=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(root: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """An HTTP server over `root` on `host` (loopback, or the process node's bridge); yields its base URL."""
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def attempt(source: str, dest: Path, public_key: Path) -> TerminationRecord:
    """One init-container run: the termination record it would leave."""
    try:
        result: signing.VerifiedModel | ParametersError = fetch.fetch(source, dest, public_key)
    except ParametersError as err:
        result = err
    return fetch.termination_record(source, result, signing.fingerprint(signing.load_public_key(public_key)))


def step(title: str) -> None:
    console.print(f"\n[bold cyan]▶ {title}[/]")


def show_record(record: TerminationRecord, dest: Path) -> None:
    """The outcome, what DEST holds, and the termination log the operator would read."""
    mark = "[green]✓ verified[/]" if record.verified else "[red]✗ refused[/]"
    contents = sorted(p.name for p in dest.iterdir()) if dest.exists() else []
    console.print(f"  {mark}  [bold]{record.reason}[/]: {record.message}")
    console.print(f"  {dest.name}/ holds: {', '.join(contents) or '[bold]nothing[/]'}")
    console.print(f"  [dim]termination log: {record.line()}[/]", soft_wrap=True)


def signing_story() -> int:
    """The offline act: fetch and verify on this machine, no cluster (what the init container does)."""
    console.print(Panel.fit("modeldeploy demo: signed model parameters, verified before anything loads them"))
    with tempfile.TemporaryDirectory(prefix="modeldeploy-demo-") as tmp:
        work = Path(tmp)

        step("Train the iris example (scikit-learn, no download)")
        model = work / "iris"
        train(model)
        console.print(f"  wrote {', '.join(sorted(p.name for p in model.iterdir()))}")

        step("modeldeploy keygen: an EC P-256 key pair (the private key stays where training happens)")
        keys, other = write_keys(work / "keys"), write_keys(work / "other-keys")
        console.print(f"  public key fingerprint {keys.fingerprint}")

        step("modeldeploy sign: an OpenSSF Model Signing bundle over every file")
        signature = signing.sign(model, keys.private)
        console.print(f"  {signature.name}, manifest {signing.signed_digest(signature)}")

        step("Publish iris-1.0.0.tar.gz and its .sig on a loopback HTTP server (standing in for S3)")
        bucket = work / "bucket"
        bucket.mkdir()
        pack(model, bucket / "iris-1.0.0.tar.gz")
        (bucket / "iris-1.0.0.tar.gz.sig").write_bytes(signature.read_bytes())
        joblib_bytes = bytearray((model / "model.joblib").read_bytes())
        joblib_bytes[len(joblib_bytes) // 2] ^= 0x01
        pack(model, bucket / "tampered.tar.gz", {"model.joblib": bytes(joblib_bytes)})
        (bucket / "tampered.tar.gz.sig").write_bytes(signature.read_bytes())

        pod = work / "pod"
        pod.mkdir()
        with serve_directory(bucket) as url:
            step("modeldeploy fetch: download, verify, then install atomically (the init container)")
            good = pod / "model"
            show_record(attempt(f"{url}/iris-1.0.0.tar.gz", good, keys.public), good)

            step("The model server verifies model.sig again (trusted key) before loading")
            console.print(f"  [green]✓[/] verify: {len(signing.verify(good, keys.public).files)} signed files match")

            step("A tampered copy (one byte of model.joblib flipped, same signature)")
            tampered_dest = pod / "tampered"
            tampered = attempt(f"{url}/tampered.tar.gz", tampered_dest, keys.public)
            show_record(tampered, tampered_dest)

            step("The genuine archive checked with the wrong public key")
            wrong_dest = pod / "wrong-key"
            wrong = attempt(f"{url}/iris-1.0.0.tar.gz", wrong_dest, other.public)
            show_record(wrong, wrong_dest)

        step("Tampering after install: the server refuses to load")
        (good / "model.joblib").write_bytes(bytes(joblib_bytes))
        try:
            signing.verify(good, keys.public)
            console.print("  [red]tampering after install went unnoticed[/]")
            return 1
        except VerificationError as err:
            console.print(f"  [red]✗ refused[/]  {err}")

        refused = not tampered.verified and not wrong.verified
        console.print(
            Panel.fit(
                "[green]demo passed: verified parameters installed, every tampered input refused[/]"
                if refused
                else "[red]demo failed: a tampered input was accepted[/]"
            )
        )
        return 0 if refused else 1


@click.command("demo")
@click.option("--keep", is_flag=True,
              help="Leave the cluster, the operator, the bucket and the demo's ModelDeployment running for kubectl.")
def demo(keep: bool) -> None:
    """The whole story on a local single-node Kubernetes (as root): signed iris served, tampering refused."""
    raise SystemExit(main(keep))


def main(keep: bool = False) -> int:
    """``make demo``: the whole story on the local cluster with its real node."""
    from devcluster.cluster_demo import run

    return run(console, keep)


if __name__ == "__main__":
    demo()
