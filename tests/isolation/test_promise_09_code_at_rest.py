"""Promise 9: function code is encrypted at rest, and a stored blob that was
tampered with is detected before it reaches a microVM (seed: "Lambda
protects access to it by encrypting it at-rest")."""
import json
import os

import pytest

from conftest import create, iso_wasm

pytestmark = pytest.mark.vm

# The stash module carries this string in a data segment; its plaintext
# must appear nowhere in emberd's data directory.
MARKER = b"stash="


def data_files(e):
    for root, _, files in os.walk(e.data_dir):
        for f in files:
            yield os.path.join(root, f)


def blob_of(e):
    d = os.path.join(e.data_dir, "store", "blobs")
    [blob] = sorted(n for n in os.listdir(d) if len(n) == 64)
    return os.path.join(d, blob)


def test_code_is_encrypted_at_rest(emberd):
    code = iso_wasm("stash")
    assert MARKER in code
    c = emberd.client()
    create(c, "secret", code)
    r = c.invoke(FunctionName="secret", Payload=b'"put:x"')
    assert r["Payload"].read() == b'"stash=x"'
    blob = open(blob_of(emberd), "rb").read()
    assert len(blob) >= len(code) and code[:8] not in blob
    for path in data_files(emberd):
        if path.endswith(".log") or not os.path.isfile(path) or os.path.islink(path):
            continue  # logs, sockets
        with open(path, "rb") as f:
            assert MARKER not in f.read(), f"plaintext code found in {path}"


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_tampered_blob_never_reaches_a_vm(emberd, where):
    c = emberd.client()
    create(c, "t", iso_wasm("stash"))
    path = blob_of(emberd)
    raw = bytearray(open(path, "rb").read())
    # first: the format magic; middle: ciphertext; last: the GCM tag.
    i = {"first": 0, "middle": len(raw) // 2, "last": len(raw) - 1}[where]
    raw[i] ^= 0x01
    open(path, "wb").write(bytes(raw))
    status, headers, body = emberd.raw("POST", "/2015-03-31/functions/t/invocations", b"{}")
    assert status == 500 and headers["x-amzn-errortype"] == "ServiceException", body
    assert "integrity check" in json.loads(body)["message"], body
    assert emberd.envs() == [], "an environment was started for tampered code"
    # Restoring the blob restores the function: the check, not the file, refused it.
    raw[i] ^= 0x01
    open(path, "wb").write(bytes(raw))
    r = c.invoke(FunctionName="t", Payload=b'"get"')
    assert r["Payload"].read() == b'"stash="'
