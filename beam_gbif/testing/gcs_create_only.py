"""gcp-storage-emulator with GCS's create-only precondition: an upload with ``ifGenerationMatch=0``
onto an existing object is refused with 412 Precondition Failed, as real GCS does.

The emulator ignores preconditions and overwrites, so without this the create-only path of
``GcsStore.write_atomic`` could never be exercised. Run as the emulator's command:
``python -m beam_gbif.testing.gcs_create_only start ...`` (``GcsEmulator`` does).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


def _object_name(request: Any) -> str:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data if isinstance(request.data, dict) else {}
    return (data.get("meta") or {}).get("name") or data.get("name") or ""


def honour_create_only() -> None:
    """Wraps the emulator's upload handler; must run before ``gcp_storage_emulator.server`` is imported
    (its routing table keeps a reference to the handler)."""
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    original = objects.insert

    def insert(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        if request.query.get("ifGenerationMatch") == ["0"]:
            try:
                storage.get_file_obj(request.params["bucket_name"], _object_name(request))
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                message = "At least one of the pre-conditions you specified did not hold."
                response.json({"error": {"code": 412, "message": message,
                                         "errors": [{"reason": "conditionNotMet", "message": message}]}})
                return None
        return original(request, response, storage, *args, **kwargs)

    objects.insert = insert


def main() -> None:
    honour_create_only()
    from gcp_storage_emulator.__main__ import main as emulator_main

    emulator_main()


if __name__ == "__main__":
    main()
