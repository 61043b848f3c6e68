"""A real SMTP server in its own process (aiosmtpd) that keeps what it receives.

`SmtpServer` starts ``python -m nudge.delivery.doubles.smtp`` on 127.0.0.1 and a
free port, and stops it on `stop()`. Every accepted message is written to the
server's folder as ``<n>.eml``; addresses listed in ``rejects.tsv`` there (one
``address<TAB>code<TAB>text`` per line, read on every RCPT) are refused with
that reply. Optional: a size limit (answered with 552) and a login.

aiosmtpd is a development dependency; only this module needs it.
"""

from __future__ import annotations

import argparse
import email
import os
import socket
import subprocess
import sys
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REJECTS = "rejects.tsv"


class SmtpServer:
    """A local SMTP server process for tests, the benchmark and demos."""

    def __init__(
        self,
        folder: Path | str,
        *,
        size_limit: int | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.size_limit = size_limit
        self.username = username
        self.password = password
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15.0) -> SmtpServer:
        """Start the server process and wait until it listens."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "nudge.delivery.doubles.smtp",
            "--folder",
            str(self.folder),
        ]
        if self.size_limit is not None:
            command += ["--size-limit", str(self.size_limit)]
        if self.username is not None:
            command += ["--username", self.username, "--password", self.password or ""]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        line = self._process.stdout.readline()
        if not line.startswith("READY ") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"SMTP double did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        """Stop the server process."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            for stream in (self._process.stdout, self._process.stderr):
                if stream is not None:
                    stream.close()
            self._process = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reject(self, address: str, code: int = 550, text: str = "") -> None:
        """Refuse an address at RCPT with a reply code and text."""
        reply = text or "5.1.1 Recipient address rejected: User unknown"
        with (self.folder / REJECTS).open("a", encoding="utf-8") as handle:
            handle.write(f"{address.lower()}\t{code}\t{reply}\n")

    def messages(self) -> list[EmailMessage]:
        """Return the messages received so far, oldest first, parsed."""
        found = sorted(
            self.folder.glob("*.eml"), key=lambda p: int(p.stem.split("-")[0])
        )
        parsed = []
        for path in found:
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


class _Handler:
    """Keep each message as a file; refuse the addresses in the rejects file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        rejects = self.folder / REJECTS
        if rejects.is_file():
            for line in rejects.read_text(encoding="utf-8").splitlines():
                rejected, code, text = line.split("\t", 2)
                if rejected == address.lower():
                    return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        name = f"{self.count}-{os.getpid()}"
        partial = self.folder / f"{name}.part"
        partial.write_bytes(envelope.original_content or envelope.content)
        os.replace(partial, self.folder / f"{name}.eml")
        return f"250 2.0.0 Ok: queued as {name}"


def main(argv: list[str] | None = None) -> None:
    """Run the server until terminated; print "READY <port>" once listening."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--size-limit", type=int, default=None)
    parser.add_argument("--username")
    parser.add_argument("--password")
    args = parser.parse_args(argv)

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == args.username
            and data.password.decode() == args.password
        )
        return AuthResult(success=ok, handled=False)

    options: dict[str, Any] = {"data_size_limit": args.size_limit}
    if args.username is not None:
        options.update(
            authenticator=authenticate, auth_require_tls=False, auth_required=True
        )
    # aiosmtpd checks that it listens by connecting to the port it was given,
    # so it needs a real one: ask the kernel for a free port first.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        _Handler(args.folder), hostname="127.0.0.1", port=port, **options
    )
    controller.start()
    print(f"READY {controller.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
