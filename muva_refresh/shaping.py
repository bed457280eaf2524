"""A policy applied to a catalog: which columns are masked and which rows a subset sends.

`Shaping` is what a refresh needs of a policy: the masking plan, the subset, and the derived
masking key (never the salt itself). `shapes()` turns it into one `Shape` per table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .catalog import Catalog, TableRef
from .errors import ConfigError
from .masking import MaskPlan, mask_key, plan_masking
from .policy import Policy, load_policy, policy_path
from .shape import WHOLE, Shape
from .subset import Subset, refuse_unholdable, row_filters

MASK_KEY_SETTING = "muva.mask_key"


@dataclass(frozen=True)
class Shaping:
    policy: Policy
    masking: MaskPlan
    subset: Subset | None
    key: str | None = field(default=None, repr=False)  # derived from MUVA_MASK_SALT

    def session(self) -> tuple[tuple[str, str], ...]:
        """What every source session sets, so the masked expressions can read the key."""
        return ((MASK_KEY_SETTING, self.key),) if self.key else ()

    def on(self, catalog: Catalog) -> Shaping:
        """The same policy and key, applied to `catalog`: the live one, whose columns may be newer
        than the state's, so that a rule's glob masks a column a migration just added."""
        masking = plan_masking(self.policy, catalog)
        require_key(masking, self.policy, self.key)
        if self.subset:
            refuse_unholdable(catalog, self.subset)
        return replace(self, masking=masking)

    def shapes(self, catalog: Catalog) -> dict[TableRef, Shape]:
        filters = row_filters(catalog, self.subset) if self.subset else {}
        found = {}
        for table in catalog.tables:
            rules = self.masking.rules_of(table.ref)
            expressions = {c.name: self.masking.select_expression(table, c) for c in table.copied_columns if c.name in rules}
            shape = replace(filters.get(table.ref, WHOLE), expressions=expressions)
            if shape != WHOLE:
                found[table.ref] = shape
        return found


def shaping_for(spec: str | None, catalog: Catalog, salt: str | None) -> Shaping | None:
    """The policy named by `spec` applied to `catalog`; None without a policy. Refuses a policy
    that cannot hold on this catalog, or one with keyed rules and no salt."""
    if not spec:
        return None
    policy = load_policy(policy_path(spec))
    masking = plan_masking(policy, catalog)
    require_key(masking, policy, salt)
    subset = Subset(dict(policy.subset), policy.exclude) if policy.subset or policy.exclude else None
    if subset:
        refuse_unholdable(catalog, subset)  # before anything runs
    return Shaping(policy, masking, subset, mask_key(salt) if salt else None)


def require_key(masking: MaskPlan, policy: Policy, secret: str | None) -> None:
    if masking.needs_key and not secret:
        raise ConfigError(f"the policy {policy.path} hashes values, which needs a secret salt; nothing was touched",
                          "set MUVA_MASK_SALT (keep it secret: the masked values are only as safe as the salt)")
