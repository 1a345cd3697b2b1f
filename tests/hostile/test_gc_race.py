"""Acknowledged code must never be lost to garbage collection (issue 13,
item 1). Every delete collects the blobs no record names; a blob a
concurrent CreateFunction has stored (freshly, or found already stored by
another function: content addressing deduplicates) but not yet named in a
committed record used to be collected with it, so functions that got
`201 Created` had no code any more. A storm of creates and deletes from two
accounts at once, sharing code between them: every function that was
acknowledged and not deleted still serves its code and runs."""
import concurrent.futures as cf
import json

import pytest

from conftest import create, wasm

pytestmark = pytest.mark.vm

FUNCTIONS = 200  # half are deleted again right after their create
THREADS = 8


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def variant(module: bytes, tag: str) -> bytes:
    """`module` with a custom section holding `tag` appended: a distinct blob
    that runs the same."""
    name = b"ember-test"
    body = leb(len(name)) + name + tag.encode()
    return module + b"\x00" + leb(len(body)) + body


def test_create_delete_storm_loses_no_acknowledged_code(emberd):
    other = emberd.add_key(account="222222222222")
    accounts = [(emberd.key, emberd.client()), (other, emberd.client(other))]
    echo = wasm("echo")

    def one(i: int):
        key, client = accounts[(i // 2) % 2]
        name = f"storm-{i}"
        # A third of the functions share code (across both accounts, with
        # functions that are deleted again); the rest have their own.
        code = variant(echo, f"shared-{i // 2 % 5}" if i % 3 == 0 else f"own-{i}")
        create(client, name, code, Timeout=10)
        if i % 2:
            client.delete_function(FunctionName=name)
            return None
        return name, key, client

    with cf.ThreadPoolExecutor(THREADS) as pool:
        kept = [r for r in pool.map(one, range(FUNCTIONS)) if r]
    assert len(kept) == FUNCTIONS // 2

    lost = []
    for name, key, client in kept:
        status, _, body = emberd.raw("GET", f"/ember/code/{name}/$LATEST", key=key)
        if status != 200:
            lost.append((name, status, body[:200]))
    assert not lost, f"{len(lost)} of {len(kept)} acknowledged functions lost their code: {lost[:5]}"

    # They run: GetFunction and Invoke on one of each account's and of each
    # kind (shared or own code), plus every tenth.
    for n, (name, key, client) in enumerate(kept):
        i = int(name.split("-")[1])
        if n % 10 and i % 6 not in (0, 2):
            continue
        client.get_function(FunctionName=name)
        r = client.invoke(FunctionName=name, Payload=json.dumps({"n": name}).encode())
        assert "FunctionError" not in r, (name, r["Payload"].read())
        assert json.loads(r["Payload"].read()) == {"n": name}
    assert emberd.proc.poll() is None
