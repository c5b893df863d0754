"""The authorization service's public module: the one module of `pdo.authorization` other packages may
import (an import contract in `pyproject.toml` enforces it).

It offers the grant and the request as callers see them (`Grant`, `DataRequest`, `RequestSpec`,
`Narrowing`, `RequestStatus`), the row-filter language a grant's scope is written in (`row_filter`: parse,
check against the granted fields, evaluate — sharing applies what authorization accepted), and the command
side (`AuthorizationService`, `load_policy`), the grants made in a period for the annual disclosure
(`grants_made_between`), which runs against authorization's own tables and so only in
a process holding its database privileges (the gateway, the authorization worker, the operator's CLI).
Grant lifecycle facts reach every other service as events on pdo.authorizations.
"""

from pdo.authorization import row_filter
from pdo.authorization.models import DataRequest, Grant, Narrowing, RequestSpec, RequestStatus
from pdo.authorization.policy import load_policy
from pdo.authorization.policy_in_force import record_in_force
from pdo.authorization.reports import GrantMade, grants_made_between
from pdo.authorization.service import AuthorizationService
from pdo.authorization.tables import metadata

__all__ = [
    "AuthorizationService",
    "DataRequest",
    "Grant",
    "GrantMade",
    "grants_made_between",
    "Narrowing",
    "RequestSpec",
    "RequestStatus",
    "load_policy",
    "metadata",
    "record_in_force",
    "row_filter",
]
