"""Model registry: versioned model directories and one atomic pointer to the serving version.

See :mod:`recsys.registry.store` for the layout and the model-version contract, and
:mod:`recsys.registry.pointer` for how a server watches the pointer (hot reload).
"""

from recsys.registry.errors import PromotionRefusedError, RegistryError, VersionConflictError
from recsys.registry.fingerprint import (code_version, feature_definitions_hash, fingerprint_files,
                                         fingerprint_frame)
from recsys.registry.pointer import Pointer, PointerWatcher, read_pointer
from recsys.registry.store import (STATUSES, Artifact, ModelMetadata, PublishHook, Registry, StagingArea,
                                   Status, check_version, version_id)

__all__ = [
    "Artifact", "ModelMetadata", "Pointer", "PointerWatcher", "PromotionRefusedError", "PublishHook",
    "Registry", "RegistryError", "STATUSES", "StagingArea", "Status", "VersionConflictError",
    "check_version", "code_version", "feature_definitions_hash", "fingerprint_files",
    "fingerprint_frame", "read_pointer", "version_id",
]
