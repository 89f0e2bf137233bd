"""A local GCS emulator (the `gcp-storage-emulator` package) for tests that read and write gs://.

`start()` runs it as a subprocess on 127.0.0.1 on a free port with an in-memory bucket and
returns the process and the URL that TENSORSTORE_GCS_HTTP_URL must name.

Two gaps of the emulator are closed when it starts (`python -m tests.data.gcs_emulator ARGS`,
the emulator's own arguments): its media downloads carry no `x-goog-generation` header, which
real GCS always sends and tensorstore needs to read a zarr3 shard's chunks consistently with the
shard's index ("Malformed StorageGeneration" otherwise); and its listings ignore
startOffset/endOffset, which tensorstore's key-range listings use: given objects outside the
range (another store's, in the same bucket), tensorstore aborts (std::out_of_range). Everything
else is the emulator as is. One more gap is avoided by the store code rather than patched:
suffix byte ranges are refused (shard indexes are stored at the start of each shard).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

BUCKET = "tokbucket"  # GCS bucket names need 3+ characters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bucket: str = BUCKET, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.data.gcs_emulator", "start",
                             "--host=127.0.0.1", f"--port={port}", "--in-memory",
                             f"--default-bucket={bucket}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"gcp-storage-emulator did not start on port {port}") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _serve(argv: list[str]) -> None:
    from gcp_storage_emulator.handlers import objects  # noqa: PLC0415

    download = objects.download

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"],
                                       request.params["object_id"])
        except Exception:  # noqa: BLE001 - a missing object: the 404 is already set
            return
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

    listing = objects.ls

    def ls_with_offsets(request, response, storage, *args, **kwargs):
        # GCS lists [startOffset, endOffset) when asked; tensorstore's gcs kvstore lists key
        # ranges that way, and an unfiltered listing (other prefixes' objects) crashes it.
        start = (request.query.get("startOffset") or [None])[0]
        end = (request.query.get("endOffset") or [None])[0]
        write_json = response.json

        def in_range(obj):
            obj["items"] = [i for i in obj.get("items") or []
                            if (start is None or i["name"] >= start)
                            and (end is None or i["name"] < end)]
            write_json(obj)

        response.json = in_range
        listing(request, response, storage, *args, **kwargs)

    objects.download = download_with_generation  # before the server module binds its routes
    objects.ls = ls_with_offsets
    from gcp_storage_emulator.__main__ import main  # noqa: PLC0415

    main(argv)


if __name__ == "__main__":
    _serve(sys.argv[1:])
