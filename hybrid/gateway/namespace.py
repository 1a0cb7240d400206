"""The namespace a gateway serves: hybrid connections, SAS rules, and who may do what.

Declared hybrid connections come from the configuration; with ``dynamic = true`` a listener creates its hybrid
connection on first listen (like WCF Relay's dynamic relays). Created entities stay until the gateway restarts, so
a sender arriving between two listeners gets "no listener" rather than "no such endpoint". Their number is capped
(Azure's 10,000 endpoints per namespace), so hostile listen paths cannot grow memory without bound.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..auth import Right, SasRule, check_token, parse_token
from ..errors import AuthenticationError, BadRequest, EndpointNotFound, QuotaExceeded

if TYPE_CHECKING:
    from .config import GatewayConfig

__all__ = ["MAX_ENTITIES", "Entity", "Namespace"]

MAX_ENTITIES = 10_000
#: Tolerated clock difference when a token is presented (renewal has its own, longer grace).
CLOCK_SKEW = 30.0
#: Verified (token, entity, claim) triples remembered; each entry is a few hundred bytes.
VERIFIED_CACHE = 4096
_SEGMENT = re.compile(r"^[A-Za-z0-9._\-]{1,260}$")


@dataclass
class Entity:
    """A hybrid connection."""

    name: str
    requires_client_authorization: bool = True
    max_listeners: int = 25
    rules: list[SasRule] = field(default_factory=list)
    declared: bool = True


class Namespace:
    def __init__(self, config: GatewayConfig,
                 cluster_entities: Callable[[], frozenset[str]] = frozenset) -> None:
        self.config = config
        #: names other nodes created dynamically (a cluster shares one namespace)
        self._cluster_entities = cluster_entities
        self.rules: list[SasRule] = list(config.rules)
        self.dynamic = config.dynamic
        self._entities: dict[str, Entity] = {}
        self._verified: collections.OrderedDict[tuple[str, str, int], tuple[SasRule, int]] = \
            collections.OrderedDict()
        for hc in config.hybrid_connections.values():
            self._entities[hc.name.lower()] = Entity(
                name=hc.name,
                requires_client_authorization=hc.requires_client_authorization,
                max_listeners=hc.max_listeners,
                rules=list(hc.rules),
                declared=True,
            )

    def get(self, name: str) -> Entity | None:
        entity = self._entities.get(name.lower())
        if entity is None and self.dynamic and name in self._cluster_entities():
            entity = self._entities[name.lower()] = Entity(
                name=name, max_listeners=self.config.max_listeners_per_connection, declared=False)
        return entity

    def is_known(self, name: str) -> bool:
        return self.get(name) is not None

    def entities(self) -> list[Entity]:
        return list(self._entities.values())

    def rules_for(self, entity_name: str) -> list[SasRule]:
        entity = self.get(entity_name)
        return self.rules + (entity.rules if entity else [])

    def ensure(self, name: str) -> Entity:
        """The entity a listener names; created if the namespace is dynamic (the caller authorized first)."""
        entity = self.get(name)
        if entity is not None:
            return entity
        if not self.dynamic:
            raise EndpointNotFound(f"no hybrid connection named '{name}'")
        segments = name.split("/")
        if len(name) > 260 or not all(_SEGMENT.match(s) and s not in (".", "..") for s in segments):
            raise BadRequest("hybrid connection names are segments of letters, digits, '.', '_' or '-'")
        if len(self._entities) >= MAX_ENTITIES:
            raise QuotaExceeded(f"the namespace already has {MAX_ENTITIES} hybrid connections")
        entity = Entity(name=name, max_listeners=self.config.max_listeners_per_connection, declared=False)
        self._entities[name.lower()] = entity
        return entity

    def authorize(self, token: str | None, entity_name: str, needed: Right, *, now: float,
                  anonymous_ok: bool = False) -> SasRule | None:
        """Check ``token`` for ``needed`` on ``entity_name``; None when anonymous access is allowed.

        Where the entity does not require client authorization the relay tokens are stripped but not checked,
        as Azure does (spec §1.4, §4).
        """
        if anonymous_ok:
            return None
        if not token:
            raise AuthenticationError("missing token: send it in the ServiceBusAuthorization header")
        # A client sends the same token with every request; verifying it once per (token, entity, claim) is
        # enough while it is unexpired. Only successes are cached, and expiry is checked on every use.
        key = (token, entity_name.lower(), needed.value)  # an int: Flag members hash in Python code
        hit = self._verified.get(key)
        if hit is not None:
            rule, expiry = hit
            if expiry + CLOCK_SKEW >= now:
                self._verified.move_to_end(key)
                return rule
            del self._verified[key]
        rule = check_token(token, entity=entity_name, needed=needed, rules=self.rules_for(entity_name), now=now,
                           skew=CLOCK_SKEW)
        self._verified[key] = (rule, parse_token(token).expiry)
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return rule
