"""A throwaway certificate authority for TLS tests (openssl CLI): a CA, a server certificate for
127.0.0.1/localhost, and a client certificate whose private key is encrypted with a password."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # CA certificate (PEM): what clients trust
    server_cert: Path
    server_key: Path  # unencrypted PKCS#8, as Kafka's PEM keystore reads it
    client_cert: Path
    client_key: Path  # encrypted PKCS#8
    client_key_password: str


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr}")


def _signed(name: str, cn: str, extensions: str, d: Path) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}-key.pem",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={cn}",
        cwd=d,
    )
    (d / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-out",
        f"{name}-cert.pem",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        cwd=d,
    )


def make_pki(directory: Path, client_key_password: str = "client-key-pass") -> Pki:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=fraudgraph test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    common = "authorityKeyIdentifier=keyid\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    _signed(
        "server", "127.0.0.1", common + "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", d
    )
    _signed("client", "fraudgraph-worker", common + "extendedKeyUsage=clientAuth\n", d)
    _openssl(
        "pkcs8",
        "-topk8",
        "-in",
        "client-key.pem",
        "-out",
        "client-key-encrypted.pem",
        "-v2",
        "aes-256-cbc",
        "-passout",
        f"pass:{client_key_password}",
        cwd=d,
    )
    return Pki(
        d / "ca.pem",
        d / "server-cert.pem",
        d / "server-key.pem",
        d / "client-cert.pem",
        d / "client-key-encrypted.pem",
        client_key_password,
    )
