"""The control plane's pass-through methods to the store and its secrets (no live state involved)."""

from __future__ import annotations

from pathlib import Path

from corral_scheduler.secret_env import Secrets
from corral_scheduler.store import Store


class StoreAccess:
    """Secrets, bundles and proxy tokens: read and written in the store, never in the core."""

    store: Store
    secrets: Secrets

    def set_secret(self, name: str, values: dict[str, str]) -> None:
        self.secrets.set(name, values)

    def secret_names(self) -> list[str]:
        return self.secrets.names()

    def delete_secret(self, name: str) -> None:
        self.secrets.delete(name)

    def has_bundle(self, bundle_hash: str) -> bool:
        return self.store.has_bundle(bundle_hash)

    def put_bundle(self, bundle_hash: str, data: bytes) -> None:
        self.store.put_bundle(bundle_hash, data)

    def bundle_path(self, bundle_hash: str) -> Path:
        return self.store.bundle_path(bundle_hash)

    def create_proxy_token(self, name: str) -> tuple[str, str]:
        return self.store.create_proxy_token(name)

    def check_proxy_token(self, token_id: str, secret: str) -> bool:
        return self.store.check_proxy_token(token_id, secret)
