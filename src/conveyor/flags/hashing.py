"""The Unleash specification's hashes: murmur3 (x86, 32 bits) of `groupId:stickinessValue`."""

from __future__ import annotations

import mmh3

# the seed of the variant hash: a user's variant is independent of their rollout bucket
VARIANT_SEED = 86028157


def normalized_hash(identifier: str, group_id: str, normalizer: int = 100, seed: int = 0) -> int:
    """The bucket 1..normalizer of an identifier within a group (a flag or strategy)."""
    return mmh3.hash(f"{group_id}:{identifier}", seed, signed=False) % normalizer + 1


def normalized_variant_hash(identifier: str, group_id: str, normalizer: int) -> int:
    return normalized_hash(identifier, group_id, normalizer, VARIANT_SEED)
