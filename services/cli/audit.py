"""`pdo audit export|verify|prove|public-key|verify-statement`: the audit log, checked offline.

`export --out FILE` writes the log as JSON lines (entries, checkpoints, the public key). `verify` checks the
log in the database, or an export (`--file`), against its signed checkpoints and the public key: exit 0 with
a one-line summary, exit 1 naming the first bad entry and why. `prove --entry N` prints the inclusion proof
of entry N under the latest checkpoint and verifies it; `prove --first M --second N` prints the consistency
proof between two signed sizes (as GET /v1/audit/consistency answers) and verifies it. `verify-proof FILE
--public-key PEM` checks a saved /v1/audit/proof or /v1/audit/consistency answer with nothing else running:
exit 0 when sound, 1 with the reason. `public-key` prints the PEM public key that
verifies the checkpoints (never the private key). `verify-statement` is a tenant's check of a statement
(pdo.cli.verify_statement). Exit 2 on a pdo error (no key configured ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from pdo.cli import verify_statement
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import InvalidInput


def register(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="the tamper-evident audit log: export, verify, prove")
    actions = parser.add_subparsers(dest="action", required=True)

    export = actions.add_parser("export", help="write the log, its checkpoints and public key as JSON lines")
    export.add_argument("--out", required=True, type=Path, help="the file to write")
    export.set_defaults(func=run_export)

    verify = actions.add_parser(
        "verify", help="verify the log against its signed checkpoints (exit 1: tampered)"
    )
    source = verify.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="an export to verify instead of the database")
    source.add_argument(
        "--from-topic",
        action="store_true",
        help="verify the mirror on the pdo.audit topic instead of the database (needs only the broker)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        help="PEM public key to trust (default: the configured signing key's; for --file, the export's own)",
    )
    verify.set_defaults(func=run_verify)

    prove = actions.add_parser(
        "prove",
        help="print and check the inclusion proof of one entry (--entry N), or the consistency proof "
        "between two signed sizes (--first M --second N)",
    )
    which = prove.add_mutually_exclusive_group(required=True)
    which.add_argument("--entry", type=int, help="the entry's seq")
    which.add_argument("--first", type=int, help="the older signed size (with --second)")
    prove.add_argument("--second", type=int, help="the newer signed size (with --first)")
    prove.set_defaults(func=run_prove)

    verify_proof = actions.add_parser(
        "verify-proof",
        help="check a saved /v1/audit/proof or /v1/audit/consistency answer offline (exit 1: not sound)",
    )
    verify_proof.add_argument("file", type=Path, help="the saved JSON answer")
    verify_proof.add_argument(
        "--public-key", required=True, type=Path, help="the PEM public key you trust (`pdo audit public-key`)"
    )
    verify_proof.set_defaults(func=run_verify_proof)

    public_key = actions.add_parser("public-key", help="print the PEM public key that verifies checkpoints")
    public_key.set_defaults(func=run_public_key)

    verify_statement.register(actions)


def _store(settings: Settings):
    from pdo.audit.store import AuditStore

    db.upgrade(settings.database_url)
    return AuditStore(db.make_engine(settings.database_url))


def run_export(args: argparse.Namespace) -> int:
    from pdo.audit.checkpoints import Signer
    from pdo.audit.verify import export_lines

    settings = Settings()
    store = _store(settings)
    signer = Signer.from_settings(settings)
    lines = export_lines(store.entries(), store.checkpoints(), signer.public_key)
    args.out.write_text("".join(lines), encoding="utf-8")
    print(f"exported {store.size()} entries and {len(store.checkpoints())} checkpoint(s) to {args.out}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from pdo.audit.checkpoints import Signer, load_public_key
    from pdo.audit.mirror import fetch_topic, read_topic
    from pdo.audit.verify import read_export, verify_log

    trusted = load_public_key(args.public_key.read_bytes()) if args.public_key else None
    if args.file:
        exported = read_export(args.file)
        public_key = trusted or exported.public_key
        if public_key is None:
            raise InvalidInput(f"{args.file} holds no public key", hint="pass --public-key PEM")
        logged, signed = exported.entries, exported.checkpoints
    elif args.from_topic:
        if trusted is None:
            raise InvalidInput("--from-topic needs the key to trust", hint="pass --public-key PEM")
        public_key = trusted
        mirrored = read_topic(fetch_topic(Settings()))
        if mirrored.problems:
            # The topic itself is out of order: the first problem is the verdict, the rest context.
            for problem in mirrored.problems:
                print(f"audit log NOT verified: pdo.audit topic: {problem}", file=sys.stderr)
            return 1
        logged, signed = mirrored.entries, mirrored.checkpoints
    else:
        settings = Settings()
        store = _store(settings)
        public_key = trusted or Signer.from_settings(settings).public_key
        logged, signed = store.entries(), store.checkpoints()
    verdict = verify_log(logged, signed, public_key)
    print(verdict.summary(), file=sys.stdout if verdict.good else sys.stderr)
    return 0 if verdict.good else 1


def run_prove(args: argparse.Namespace) -> int:
    from pdo.audit.checkpoints import Signer, verify
    from pdo.core import merkle

    settings = Settings()
    store = _store(settings)
    if args.entry is None:
        return _prove_consistency(args, store.engine, Signer.from_settings(settings).public_key)
    if args.second is not None:
        raise InvalidInput("--second goes with --first, not with --entry", hint="drop --second")
    latest = store.latest_checkpoint()
    if latest is None or not 0 <= args.entry < latest.size:
        covered = (
            "no checkpoint yet" if latest is None else f"the latest checkpoint covers 0..{latest.size - 1}"
        )
        raise InvalidInput(
            f"entry {args.entry} is not under a checkpoint ({covered})",
            hint="wait for the next checkpoint, or name an entry it covers",
        )
    hashes = store.leaf_hashes(end=latest.size)
    proof = merkle.inclusion_proof(args.entry, hashes)
    included = merkle.verify_inclusion(hashes[args.entry], args.entry, latest.size, proof, latest.root)
    signed = verify(latest, Signer.from_settings(settings).public_key)
    print(
        json.dumps(
            {
                "entry": args.entry,
                "leaf_hash": hashes[args.entry].hex(),
                "size": latest.size,
                "root": latest.root.hex(),
                "proof": [node.hex() for node in proof],
                "verified": included and signed,
            },
            indent=2,
        )
    )
    return 0 if included and signed else 1


def run_public_key(args: argparse.Namespace) -> int:
    from pdo.audit.checkpoints import Signer

    print(Signer.from_settings(Settings()).public_key_pem(), end="")
    return 0


def _prove_consistency(args: argparse.Namespace, engine, public_key) -> int:
    """Prints the consistency proof in the shape of GET /v1/audit/consistency, and checks it."""
    from pdo.audit.reading import consistency_json, consistency_proof

    if args.second is None:
        raise InvalidInput("--first needs --second", hint="pdo audit prove --first M --second N")
    answer = consistency_json(consistency_proof(engine, args.first, args.second))
    print(json.dumps(answer, indent=2))
    return _verdict(answer, public_key, sys.stderr)  # stdout is the proof, to save


def run_verify_proof(args: argparse.Namespace) -> int:
    from pdo.audit.checkpoints import load_public_key

    public_key = load_public_key(args.public_key.read_bytes())
    try:
        answer = json.loads(args.file.read_text(encoding="utf-8"))
    except ValueError as error:
        print(f"proof NOT verified: {args.file} is not JSON ({error})", file=sys.stderr)
        return 1
    return _verdict(answer, public_key, sys.stdout)


def _verdict(answer: object, public_key, out: TextIO) -> int:
    from pdo.audit.verify import Unsound, verify_answer

    try:
        proven = verify_answer(answer, public_key)
    except Unsound as problem:
        print(f"proof NOT verified: {problem}", file=sys.stderr)
        return 1
    print(f"proof verified: {proven}", file=out)
    return 0
