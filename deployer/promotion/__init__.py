"""Promotion between environments on the path to live (dev → test → preprod → prod).

After a successful deployment (soak included, every serving node on the release) an
environment's runner signs a :class:`PromotionRecord` — app, version, artefact sha256,
environment, the deployment's global id, time, the checks it passed — with the environment's
own key (minisign, like releases), and publishes it, immutably, in a promotion store
(``file://`` or ``s3://``: :mod:`._store`). The next environment's :class:`PromotionGate`
admits a release only if the previous environment's record for the same digest verifies
against that environment's public key; ``deployer promotion show`` reads a store: where a
release has been, when, by which deployment.

- ``_record`` — the record and its canonical bytes; ``_store`` — the stores;
- ``_signed`` — signing, publishing, reading back (:class:`PromotionRecorder`);
- ``_gate`` — the gate, a check at the lifecycle's ``admission`` safe point.
"""

from __future__ import annotations

from ._gate import PromotionGate, public_half
from ._record import PromotionRecord
from ._signed import PromotionRecorder, Recorded, SignedRecord, publish_record, read_records, sign_record
from ._store import FileRecordStore, RecordStore, S3RecordStore, open_record_store

__all__ = [
    "FileRecordStore",
    "PromotionGate",
    "PromotionRecord",
    "PromotionRecorder",
    "RecordStore",
    "Recorded",
    "S3RecordStore",
    "SignedRecord",
    "open_record_store",
    "public_half",
    "publish_record",
    "read_records",
    "sign_record",
]
